// GELU in GPT-2's tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
using ILGPU;
using ILGPU.Algorithms;

namespace L2L.Kernels;

/// <summary>
/// GELU forward and backward, element-wise with grid-stride loops. Everything is computed from
/// <c>e = exp(-2|z|)</c>, which lies in (0, 1]: <c>XMath.Tanh</c>'s CUDA form <c>(e^2z - 1) / (e^2z + 1)</c>
/// turns into NaN once <c>e^2z</c> overflows (|z| &gt; 44), and <c>1 + tanh(z)</c>, <c>1 - tanh(z)^2</c>
/// cancel badly in float for negative or large z.
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
            float e = XMath.Exp(-2f * XMath.Abs(SqrtTwoOverPi * (x + Coefficient * x * x * x)));
            output[i] = x * HalfOnePlusTanh(x, e);
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
            float e = XMath.Exp(-2f * XMath.Abs(SqrtTwoOverPi * (x + Coefficient * x2 * x)));
            float onePlusE = 1f + e;
            float sech2 = 4f * e / (onePlusE * onePlusE);
            float local = HalfOnePlusTanh(x, e);
            // sech2 is exactly 0 long before x * x overflows; skipping the term keeps 0 * inf out.
            if (sech2 > 0f)
                local += 0.5f * x * sech2 * SqrtTwoOverPi * (1f + 3f * Coefficient * x2);
            dInput[i] = dOutput[i] * local;
        }
    }

    /// <summary>
    /// <c>0.5 (1 + tanh(z))</c> from <c>e = exp(-2|z|)</c>, where z has the sign of <paramref name="x"/>:
    /// <c>1 / (1 + e)</c> for z &gt;= 0 and <c>e / (1 + e)</c> for z &lt; 0, which avoids the cancellation of
    /// <c>1 + tanh(z)</c> for negative z.
    /// </summary>
    public static float HalfOnePlusTanh(float x, float e) => (x < 0f ? e : 1f) / (1f + e);
}
