// GELU in GPT-2's tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
using ILGPU;
using ILGPU.Algorithms;

namespace L2L.Kernels;

/// <summary>
/// GELU forward and backward, element-wise with grid-stride loops. tanh is computed here from
/// <c>exp(-2|z|)</c> rather than with <c>XMath.Tanh</c>, whose CUDA form <c>(e^2z - 1) / (e^2z + 1)</c>
/// turns into NaN once <c>e^2z</c> overflows (|z| &gt; 44).
/// </summary>
public static class GeluKernels
{
    private const float SqrtTwoOverPi = 0.7978845608028654f;
    private const float Coefficient = 0.044715f;

    /// <summary><c>output = gelu(input)</c>. Shapes: <c>output</c>, <c>input</c> (N); may alias.</summary>
    public static void GeluForwardKernel(ArrayView<float> output, ArrayView<float> input)
    {
        long stride = Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < output.Length; i += stride)
        {
            float x = input[i];
            float t = StableTanh(SqrtTwoOverPi * (x + Coefficient * x * x * x));
            output[i] = 0.5f * x * (1f + t);
        }
    }

    /// <summary>
    /// <c>dInput = dOutput * gelu'(input)</c> (assigned). Shapes: <c>dInput</c>, <c>dOutput</c>, <c>input</c> (N);
    /// <c>dInput</c> may alias <c>dOutput</c>.
    /// </summary>
    public static void GeluBackwardKernel(ArrayView<float> dInput, ArrayView<float> dOutput, ArrayView<float> input)
    {
        long stride = Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < dInput.Length; i += stride)
        {
            float x = input[i];
            float x2 = x * x;
            float t = StableTanh(SqrtTwoOverPi * (x + Coefficient * x2 * x));
            float sech2 = 1f - t * t;
            float local = 0.5f * (1f + t);
            // sech2 is exactly 0 long before x * x overflows; skipping the term keeps 0 * inf out.
            if (sech2 > 0f)
                local += 0.5f * x * sech2 * SqrtTwoOverPi * (1f + 3f * Coefficient * x2);
            dInput[i] = dOutput[i] * local;
        }
    }

    /// <summary>tanh(z) from exp(-2|z|), finite for every finite z.</summary>
    public static float StableTanh(float z)
    {
        float e = XMath.Exp(-2f * XMath.Abs(z));
        float t = (1f - e) / (1f + e);
        return z < 0f ? -t : t;
    }
}
