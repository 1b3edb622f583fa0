// GELU in GPT-2's tanh approximation, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), and BERT's exact
// form x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), with a float erf built from basic operations and Exp.
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
    public static void GeluForwardKernel(ArrayView<float> output, ArrayView<float> input) =>
        GeluForwardGenericKernel<float, Fp32Storage>(output, input);

    /// <summary><see cref="GeluForwardKernel"/> over any storage type: computed in FP32, rounded once on store.</summary>
    public static void GeluForwardGenericKernel<T, S>(ArrayView<T> output, ArrayView<T> input)
        where T : unmanaged where S : struct, IStorage<T>
    {
        var st = default(S);
        long stride = Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < output.Length; i += stride)
        {
            float x = st.ToFloat(input[i]);
            float e = XMath.Exp(-2f * XMath.Abs(SqrtTwoOverPi * (x + Coefficient * x * x * x)));
            output[i] = st.FromFloat(x * HalfOnePlusTanh(x, e));
        }
    }

    /// <summary>
    /// <c>dInput = dOutput * gelu'(input)</c> (assigned). Shapes: <c>dInput</c>, <c>dOutput</c>, <c>input</c> (N);
    /// <c>dInput</c> may alias <c>dOutput</c>.
    /// </summary>
    public static void GeluBackwardKernel(ArrayView<float> dInput, ArrayView<float> dOutput, ArrayView<float> input) =>
        GeluBackwardGenericKernel<float, Fp32Storage>(dInput, dOutput, input);

    /// <summary><see cref="GeluBackwardKernel"/> over any storage type: computed in FP32, rounded once on store.</summary>
    public static void GeluBackwardGenericKernel<T, S>(ArrayView<T> dInput, ArrayView<T> dOutput, ArrayView<T> input)
        where T : unmanaged where S : struct, IStorage<T>
    {
        var st = default(S);
        long stride = Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < dInput.Length; i += stride)
        {
            float x = st.ToFloat(input[i]);
            float x2 = x * x;
            float e = XMath.Exp(-2f * XMath.Abs(SqrtTwoOverPi * (x + Coefficient * x2 * x)));
            float onePlusE = 1f + e;
            float sech2 = 4f * e / (onePlusE * onePlusE);
            float local = HalfOnePlusTanh(x, e);
            // sech2 is exactly 0 long before x * x overflows; skipping the term keeps 0 * inf out.
            if (sech2 > 0f)
                local += 0.5f * x * sech2 * SqrtTwoOverPi * (1f + 3f * Coefficient * x2);
            dInput[i] = st.FromFloat(st.ToFloat(dOutput[i]) * local);
        }
    }

    /// <summary>
    /// <c>0.5 (1 + tanh(z))</c> from <c>e = exp(-2|z|)</c>, where z has the sign of <paramref name="x"/>:
    /// <c>1 / (1 + e)</c> for z &gt;= 0 and <c>e / (1 + e)</c> for z &lt; 0, which avoids the cancellation of
    /// <c>1 + tanh(z)</c> for negative z.
    /// </summary>
    public static float HalfOnePlusTanh(float x, float e) => (x < 0f ? e : 1f) / (1f + e);

    private const float InvSqrt2 = 0.70710678118654752f;
    private const float InvSqrt2Pi = 0.39894228040143268f;

    /// <summary><c>output = x Phi(x)</c>, exact (erf) GELU. Shapes: <c>output</c>, <c>input</c> (N); may alias.</summary>
    public static void GeluErfForwardKernel(ArrayView<float> output, ArrayView<float> input) =>
        GeluErfForwardGenericKernel<float, Fp32Storage>(output, input);

    /// <summary><see cref="GeluErfForwardKernel"/> over any storage type: computed in FP32, rounded once on store.</summary>
    public static void GeluErfForwardGenericKernel<T, S>(ArrayView<T> output, ArrayView<T> input)
        where T : unmanaged where S : struct, IStorage<T>
    {
        var st = default(S);
        long stride = Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < output.Length; i += stride)
        {
            float x = st.ToFloat(input[i]);
            output[i] = st.FromFloat(x * NormalCdf(x, XMath.Exp(-0.5f * x * x)));
        }
    }

    /// <summary>
    /// <c>dInput = dOutput * (Phi(x) + x phi(x))</c> (assigned), the derivative of exact GELU.
    /// Shapes: <c>dInput</c>, <c>dOutput</c>, <c>input</c> (N); <c>dInput</c> may alias <c>dOutput</c>.
    /// </summary>
    public static void GeluErfBackwardKernel(ArrayView<float> dInput, ArrayView<float> dOutput, ArrayView<float> input) =>
        GeluErfBackwardGenericKernel<float, Fp32Storage>(dInput, dOutput, input);

    /// <summary><see cref="GeluErfBackwardKernel"/> over any storage type: computed in FP32, rounded once on store.</summary>
    public static void GeluErfBackwardGenericKernel<T, S>(ArrayView<T> dInput, ArrayView<T> dOutput, ArrayView<T> input)
        where T : unmanaged where S : struct, IStorage<T>
    {
        var st = default(S);
        long stride = Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < dInput.Length; i += stride)
        {
            float x = st.ToFloat(input[i]);
            float e = XMath.Exp(-0.5f * x * x);
            float local = NormalCdf(x, e);
            // e is exactly 0 long before x overflows; skipping the term keeps 0 * inf out.
            if (e > 0f)
                local += x * e * InvSqrt2Pi;
            dInput[i] = st.FromFloat(st.ToFloat(dOutput[i]) * local);
        }
    }

    /// <summary>
    /// The error function in float, within 2e-7 relative of the exact value (1.8e-7 measured) for every
    /// normal float input; the tests measure it against a double erf on a dense grid. Odd: <c>Erf(-z) = -Erf(z)</c>.
    /// </summary>
    public static float Erf(float z)
    {
        float a = XMath.Abs(z);
        // Below 1, 1 - erfc(a) would lose up to two bits to cancellation; the series does not.
        if (a < 1f) return z * ErfOverZ(z * z);
        float r = 1f - XMath.Exp(-a * a) * ScaledErfc(a);
        return z < 0f ? -r : r;
    }

    /// <summary>
    /// Phi(x) = 0.5 (1 + erf(x / sqrt 2)), the standard normal CDF, given <c>e = exp(-x^2 / 2)</c>.
    /// The lower tail is computed as 0.5 erfc(|x| / sqrt 2) directly, never as 1 - (something near 1),
    /// so Phi keeps its relative accuracy for negative x until it underflows.
    /// </summary>
    public static float NormalCdf(float x, float e)
    {
        float z = x * InvSqrt2;
        float a = XMath.Abs(z);
        // Beyond 1/2 the series' 0.5 + 0.5 erf(z) would cancel for negative z, so the tail takes over there.
        if (a < 0.5f) return 0.5f + 0.5f * z * ErfOverZ(z * z);
        // erfc(a) = exp(-a^2) Q(a) with exp(-a^2) = e: x^2 / 2 rounds once, (x / sqrt 2)^2 would round twice.
        float tail = 0.5f * e * ScaledErfc(a);
        return x > 0f ? 1f - tail : tail;
    }

    /// <summary>
    /// erf(z) / z for w = z^2 &lt;= 1, from the Maclaurin series (2 / sqrt pi) sum (-w)^n / (n! (2n + 1)),
    /// n = 0..9. The series alternates with falling terms, so the truncation error is below the first
    /// omitted term, (2 / sqrt pi) / (10! 21) = 1.5e-8 (and 1.5e-14 for w &lt;= 1/4).
    /// </summary>
    private static float ErfOverZ(float w) =>
        1.1283791670955126f + w * (-0.37612638903183754f + w * (0.11283791670955126f + w * (-0.026866170645131252f
        + w * (0.005223977625442188f + w * (-0.0008548327023450852f + w * (0.00012055332981789664f
        + w * (-1.492565035840625e-05f + w * (1.6462114365889246e-06f + w * -1.6365844691234924e-07f))))))));

    /// <summary>
    /// Q(a) = erfc(a) exp(a^2) for a &gt;= 1/2: a degree-9 polynomial in s, where t = 1 / (1 + a / 2) and
    /// s = (25 t - 12) / 8 maps a in [0.5, 10.5] (t in [0.16, 0.8]) onto [-1, 1]. The coefficients are a
    /// near-minimax fit of relative error (2e-9 in double over that range); beyond a = 10.5 erfc is 0 in float.
    /// </summary>
    private static float ScaledErfc(float a)
    {
        float t = 1f / (1f + 0.5f * a);
        float s = 3.125f * t - 1.5f;
        return 0.23868985144859864f + s * (0.2612679996982072f + s * (0.09511772758268232f + s * (0.020518084522822715f
            + s * (0.0008573745899199748f + s * (-0.0007256460399970976f + s * (-7.711406690183556e-05f
            + s * (4.137702956072549e-05f + s * (3.28298978003502e-06f + s * -2.592503457548309e-06f))))))));
    }
}
