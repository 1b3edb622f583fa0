// Conversions for mixed precision: FP32 <-> FP16 (rounded by bit manipulation) and between any two storage types.
using ILGPU;
using Half = ILGPU.Half;

namespace L2L.Kernels;

/// <summary>
/// Casts between FP32 and <see cref="Half"/>. FP32 to FP16 is rounded to nearest, ties to even, by
/// explicit bit manipulation: ILGPU's own <c>(Half)float</c> on the CPU accelerator truncates the
/// mantissa (a table method), while CUDA rounds to nearest, and the engine needs one answer everywhere.
/// Overflow gives infinity, values below half the smallest subnormal give signed zero, NaN stays NaN.
/// </summary>
public static class CastKernels
{
    /// <summary><c>output[i] = (half)input[i]</c>, round to nearest even. Shapes: <c>output</c>, <c>input</c> (N).</summary>
    public static void ToHalfKernel(ArrayView<Half> output, ArrayView<float> input)
    {
        long stride = Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < output.Length; i += stride)
            output[i] = Interop.IntAsFloat(FloatToHalfBits(input[i]));
    }

    /// <summary>
    /// <c>output[i] = input[i]</c> converted between any two storage types (FP32, <see cref="Bf16"/>, FP16): widened to
    /// FP32 exactly, then rounded to nearest even into the output type. Shapes: <c>output</c>, <c>input</c> (N).
    /// </summary>
    public static void ConvertGenericKernel<TIn, SIn, TOut, SOut>(ArrayView<TOut> output, ArrayView<TIn> input)
        where TIn : unmanaged where SIn : struct, IStorage<TIn>
        where TOut : unmanaged where SOut : struct, IStorage<TOut>
    {
        long stride = Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < output.Length; i += stride)
            output[i] = default(SOut).FromFloat(default(SIn).ToFloat(input[i]));
    }

    /// <summary><c>output[i] = (float)input[i]</c>, exact. Shapes: <c>output</c>, <c>input</c> (N).</summary>
    public static void ToFloatKernel(ArrayView<float> output, ArrayView<Half> input)
    {
        long stride = Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < output.Length; i += stride)
            output[i] = (float)input[i];
    }

    /// <summary>The IEEE binary16 bits nearest to <paramref name="value"/>, ties to even.</summary>
    public static ushort FloatToHalfBits(float value)
    {
        uint bits = Interop.FloatAsInt(value);
        uint sign = (bits >> 16) & 0x8000u;
        uint magnitude = bits & 0x7FFFFFFFu;
        uint result;
        if (magnitude > 0x7F800000u)
        {
            result = 0x7E00u; // NaN
        }
        else if (magnitude >= 0x477FF000u)
        {
            // 65520 and above (the midpoint between 65504 and 2^16, which rounds to even = 2^16) and infinity.
            result = 0x7C00u;
        }
        else if (magnitude >= 0x38800000u)
        {
            // Normal in FP16: rebias the exponent (127 -> 15) and round away the low 13 mantissa bits.
            result = (magnitude - 0x38000000u) >> 13;
            uint rest = magnitude & 0x1FFFu;
            if (rest > 0x1000u || (rest == 0x1000u && (result & 1u) != 0))
                result += 1u; // a carry into the exponent is the correctly rounded value
        }
        else if (magnitude > 0x33000000u)
        {
            // Subnormal in FP16: the value in units of 2^-24 is mantissa * 2^(exponent - 126).
            uint exponent = magnitude >> 23;
            uint mantissa = (magnitude & 0x7FFFFFu) | 0x800000u;
            int shift = (int)(126u - exponent);
            result = mantissa >> shift;
            uint rest = mantissa & ((1u << shift) - 1u);
            uint halfway = 1u << (shift - 1);
            if (rest > halfway || (rest == halfway && (result & 1u) != 0))
                result += 1u;
        }
        else
        {
            result = 0u; // at most 2^-25, which ties to even zero
        }
        return (ushort)(sign | result);
    }
}
