// Optimizer steps on the device, for the conventional (all-resident) executor; the relay executor updates on the host.
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
        {
            float g = grad[i];
            float mi = beta1 * m[i] + (1f - beta1) * g;
            float vi = beta2 * v[i] + (1f - beta2) * g * g;
            m[i] = mi;
            v[i] = vi;
            float denominator = XMath.Sqrt(vi) / bc2Sqrt + eps;
            param[i] = param[i] * decay - stepSize * (mi / denominator);
        }
    }

    /// <summary>
    /// One SGD step without momentum: <c>p -= lr * (g + wd * p)</c>. Shapes: <c>param</c>, <c>grad</c> (N).
    /// </summary>
    public static void SgdKernel(ArrayView<float> param, ArrayView<float> grad, float lr, float weightDecay)
    {
        long stride = Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < param.Length; i += stride)
        {
            float p = param[i];
            param[i] = p - lr * (grad[i] + weightDecay * p);
        }
    }
}
