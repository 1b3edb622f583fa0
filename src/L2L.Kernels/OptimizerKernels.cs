// Optimizer steps on the device, for the conventional (all-resident) executor; the relay executor updates on the host.
using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Algorithms;

namespace L2L.Kernels;

/// <summary>
/// AdamW and SGD, element-wise with grid-stride loops, following PyTorch's single-tensor
/// implementations operation by operation so host and device updates agree to float rounding.
/// </summary>
public static class OptimizerKernels
{
    /// <summary>
    /// One AdamW step: <c>p *= 1 - lr * wd</c>; <c>m = b1 m + (1 - b1) g</c>; <c>v = b2 v + (1 - b2) g^2</c>;
    /// <c>p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)</c>. The bias corrections
    /// <c>bc1 = 1 - b1^t</c>, <c>bc2 = 1 - b2^t</c> come from the host. Shapes: <c>param</c>, <c>grad</c>,
    /// <c>m</c>, <c>v</c> (N).
    /// </summary>
    public static void AdamWKernel(
        ArrayView<float> param, ArrayView<float> grad, ArrayView<float> m, ArrayView<float> v,
        float lr, float beta1, float beta2, float eps, float weightDecay, float biasCorrection1, float biasCorrection2)
    {
        float decay = 1f - lr * weightDecay;
        float stepSize = lr / biasCorrection1;
        float bc2Sqrt = XMath.Sqrt(biasCorrection2);
        long stride = Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < param.Length; i += stride)
            AdamWElement(param, grad, m, v, i, beta1, beta2, eps, decay, stepSize, bc2Sqrt);
    }

    /// <summary>
    /// <see cref="AdamWKernel"/> on FP32 master weights and state that also writes <c>copy[i]</c>, the updated weight
    /// rounded to nearest even into a 16-bit working copy (<see cref="Bf16"/> or FP16), in the same pass; the FP32
    /// results are those of <see cref="AdamWKernel"/>. Shapes: <c>param</c>, <c>grad</c>, <c>m</c>, <c>v</c>, <c>copy</c> (N).
    /// </summary>
    public static void AdamWWithCopyGenericKernel<T, S>(
        ArrayView<float> param, ArrayView<float> grad, ArrayView<float> m, ArrayView<float> v, ArrayView<T> copy,
        float lr, float beta1, float beta2, float eps, float weightDecay, float biasCorrection1, float biasCorrection2)
        where T : unmanaged where S : struct, IStorage<T>
    {
        float decay = 1f - lr * weightDecay;
        float stepSize = lr / biasCorrection1;
        float bc2Sqrt = XMath.Sqrt(biasCorrection2);
        long stride = Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < param.Length; i += stride)
            copy[i] = default(S).FromFloat(AdamWElement(param, grad, m, v, i, beta1, beta2, eps, decay, stepSize, bc2Sqrt));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float AdamWElement(ArrayView<float> param, ArrayView<float> grad, ArrayView<float> m, ArrayView<float> v, long i,
        float beta1, float beta2, float eps, float decay, float stepSize, float bc2Sqrt)
    {
        float g = grad[i];
        float mi = beta1 * m[i] + (1f - beta1) * g;
        float vi = beta2 * v[i] + (1f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float denominator = XMath.Sqrt(vi) / bc2Sqrt + eps;
        float p = param[i] * decay - stepSize * (mi / denominator);
        param[i] = p;
        return p;
    }

    /// <summary>
    /// One SGD step without momentum: <c>p -= lr * (g + wd * p)</c>. Shapes: <c>param</c>, <c>grad</c> (N).
    /// </summary>
    public static void SgdKernel(ArrayView<float> param, ArrayView<float> grad, float lr, float weightDecay)
    {
        long stride = Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < param.Length; i += stride)
            SgdElement(param, grad, i, lr, weightDecay);
    }

    /// <summary><see cref="SgdKernel"/> that also writes the updated weight's 16-bit working copy, as <see cref="AdamWWithCopyGenericKernel{T, S}"/>.</summary>
    public static void SgdWithCopyGenericKernel<T, S>(ArrayView<float> param, ArrayView<float> grad, ArrayView<T> copy, float lr, float weightDecay)
        where T : unmanaged where S : struct, IStorage<T>
    {
        long stride = Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < param.Length; i += stride)
            copy[i] = default(S).FromFloat(SgdElement(param, grad, i, lr, weightDecay));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float SgdElement(ArrayView<float> param, ArrayView<float> grad, long i, float lr, float weightDecay)
    {
        float p = param[i];
        float updated = p - lr * (grad[i] + weightDecay * p);
        param[i] = updated;
        return updated;
    }
}
