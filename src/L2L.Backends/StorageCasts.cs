// Conversions between FP32 and a run's storage type (float, Bf16 or Half), on the device and on the host.
using ILGPU;
using ILGPU.Runtime;
using L2L.Backends.Ops;
using L2L.Kernels;
using Half = ILGPU.Half;

namespace L2L.Backends;

/// <summary>
/// FP32 ↔ storage-type conversions for code that is generic over the storage type <c>T</c> (float, <see cref="Bf16"/>
/// or <see cref="Half"/>): the device ones enqueue the cast kernels (a copy for float), the host ones round exactly as
/// the device kernels do (round to nearest even).
/// </summary>
public static class StorageCasts
{
    /// <summary>Enqueues <c>output = (T)input</c> on <paramref name="s"/> (a copy when T is float).</summary>
    public static void Narrow<T>(CastOps ops, AcceleratorStream s, ArrayView<T> output, ArrayView<float> input) where T : unmanaged
    {
        if (typeof(T) == typeof(float)) input.CopyTo(s, output.Cast<float>());
        else if (typeof(T) == typeof(Bf16)) ops.ToBf16(s, output.Cast<Bf16>(), input);
        else if (typeof(T) == typeof(Half)) ops.ToHalf(s, output.Cast<Half>(), input);
        else throw new NotSupportedException($"{typeof(T).Name} is not a storage type.");
    }

    /// <summary>Enqueues <c>output = (float)input</c> on <paramref name="s"/> (a copy when T is float).</summary>
    public static void Widen<T>(CastOps ops, AcceleratorStream s, ArrayView<float> output, ArrayView<T> input) where T : unmanaged
    {
        if (typeof(T) == typeof(float)) input.Cast<float>().CopyTo(s, output);
        else if (typeof(T) == typeof(Bf16)) ops.ToFloat(s, output, input.Cast<Bf16>());
        else if (typeof(T) == typeof(Half)) ops.ToFloat(s, output, input.Cast<Half>());
        else throw new NotSupportedException($"{typeof(T).Name} is not a storage type.");
    }

    /// <summary><c>output[i] = (T)input[i]</c> on the host, rounding to nearest even as the device does.</summary>
    public static void Narrow<T>(ReadOnlySpan<float> input, Span<T> output) where T : unmanaged
    {
        if (input.Length != output.Length) throw new ArgumentException("The spans differ in length.");
        if (typeof(T) == typeof(float))
        {
            input.CopyTo(System.Runtime.InteropServices.MemoryMarshal.Cast<T, float>(output));
        }
        else if (typeof(T) == typeof(Bf16))
        {
            var o = System.Runtime.InteropServices.MemoryMarshal.Cast<T, Bf16>(output);
            for (var i = 0; i < input.Length; i++) o[i] = new Bf16(Bf16.RoundBits(input[i]));
        }
        else if (typeof(T) == typeof(Half))
        {
            var o = System.Runtime.InteropServices.MemoryMarshal.Cast<T, Half>(output);
            var storage = default(Fp16Storage);
            for (var i = 0; i < input.Length; i++) o[i] = storage.FromFloat(input[i]);
        }
        else throw new NotSupportedException($"{typeof(T).Name} is not a storage type.");
    }

    /// <summary><c>output[i] = (float)input[i]</c> on the host (exact).</summary>
    public static void Widen<T>(ReadOnlySpan<T> input, Span<float> output) where T : unmanaged
    {
        if (input.Length != output.Length) throw new ArgumentException("The spans differ in length.");
        if (typeof(T) == typeof(float))
        {
            System.Runtime.InteropServices.MemoryMarshal.Cast<T, float>(input).CopyTo(output);
        }
        else if (typeof(T) == typeof(Bf16))
        {
            var v = System.Runtime.InteropServices.MemoryMarshal.Cast<T, Bf16>(input);
            for (var i = 0; i < v.Length; i++) output[i] = v[i].ToSingle();
        }
        else if (typeof(T) == typeof(Half))
        {
            var v = System.Runtime.InteropServices.MemoryMarshal.Cast<T, Half>(input);
            for (var i = 0; i < v.Length; i++) output[i] = (float)v[i];
        }
        else throw new NotSupportedException($"{typeof(T).Name} is not a storage type.");
    }

    /// <summary>The FP32 values rounded to <paramref name="precision"/> and widened back (what the device computes with).</summary>
    public static float[] Round(ReadOnlySpan<float> values, Precision precision)
    {
        var result = values.ToArray();
        switch (precision)
        {
            case Precision.Bf16:
                for (var i = 0; i < result.Length; i++) result[i] = new Bf16(Bf16.RoundBits(result[i])).ToSingle();
                break;
            case Precision.Fp16:
                var storage = default(Fp16Storage);
                for (var i = 0; i < result.Length; i++) result[i] = (float)storage.FromFloat(result[i]);
                break;
        }
        return result;
    }
}
