// Launchers for the on-device optimizer steps used by the conventional executor.
using ILGPU;
using ILGPU.Runtime;
using L2L.Kernels;
using Half = ILGPU.Half;

namespace L2L.Backends.Ops;

/// <summary>
/// AdamW and SGD steps on device-resident parameters, PyTorch semantics; kernels loaded once per accelerator. The
/// overloads with a <see cref="Bf16"/> or <see cref="Half"/> <c>copy</c> (kernels loaded on first use) keep FP32
/// master weights and state and also write the 16-bit working copy of the updated weights in the same pass.
/// </summary>
public sealed class OptimizerOps
{
    private readonly Accelerator _accelerator;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        float, float, float, float, float, float, float> _adamW;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, float, float> _sgd;

    /// <summary>Loads the kernels on <paramref name="backend"/>'s accelerator.</summary>
    public OptimizerOps(Backend backend)
    {
        _accelerator = backend.Accelerator;
        _adamW = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
            float, float, float, float, float, float, float>(OptimizerKernels.AdamWKernel);
        _sgd = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, float, float>(OptimizerKernels.SgdKernel);
        _bf16 = new(Load<Bf16, Bf16Storage>);
        _fp16 = new(Load<Half, Fp16Storage>);
    }

    private sealed class Typed<T> where T : unmanaged
    {
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<T>,
            float, float, float, float, float, float, float> AdamW = null!;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<T>, float, float> Sgd = null!;
    }

    private readonly Lazy<Typed<Bf16>> _bf16;
    private readonly Lazy<Typed<Half>> _fp16;

    private Typed<T> Load<T, S>() where T : unmanaged where S : struct, IStorage<T> => new()
    {
        AdamW = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<T>,
            float, float, float, float, float, float, float>(OptimizerKernels.AdamWWithCopyGenericKernel<T, S>),
        Sgd = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<T>, float, float>(OptimizerKernels.SgdWithCopyGenericKernel<T, S>),
    };

    /// <summary>The AdamW step of the FP32 overload, also writing <c>copy = (bf16)param</c> (same length) in the same pass.</summary>
    public void AdamW(AcceleratorStream s, ArrayView<float> param, ArrayView<float> grad, ArrayView<float> m, ArrayView<float> v, ArrayView<Bf16> copy,
        float lr, float beta1, float beta2, float eps, float weightDecay, float biasCorrection1, float biasCorrection2) =>
        AdamW(_bf16.Value, s, param, grad, m, v, copy, lr, beta1, beta2, eps, weightDecay, biasCorrection1, biasCorrection2);

    /// <summary>The AdamW step of the FP32 overload, also writing <c>copy = (half)param</c> (same length) in the same pass.</summary>
    public void AdamW(AcceleratorStream s, ArrayView<float> param, ArrayView<float> grad, ArrayView<float> m, ArrayView<float> v, ArrayView<Half> copy,
        float lr, float beta1, float beta2, float eps, float weightDecay, float biasCorrection1, float biasCorrection2) =>
        AdamW(_fp16.Value, s, param, grad, m, v, copy, lr, beta1, beta2, eps, weightDecay, biasCorrection1, biasCorrection2);

    /// <summary>The SGD step of the FP32 overload, also writing <c>copy = (bf16)param</c> in the same pass.</summary>
    public void Sgd(AcceleratorStream s, ArrayView<float> param, ArrayView<float> grad, ArrayView<Bf16> copy, float lr, float weightDecay) =>
        Sgd(_bf16.Value, s, param, grad, copy, lr, weightDecay);

    /// <summary>The SGD step of the FP32 overload, also writing <c>copy = (half)param</c> in the same pass.</summary>
    public void Sgd(AcceleratorStream s, ArrayView<float> param, ArrayView<float> grad, ArrayView<Half> copy, float lr, float weightDecay) =>
        Sgd(_fp16.Value, s, param, grad, copy, lr, weightDecay);

    /// <summary>
    /// The AdamW step with a 16-bit copy of the updated weights, for a copy of storage type <typeparamref name="T"/>
    /// (<see cref="Bf16"/> or <see cref="Half"/>); as the typed overloads. FP32 weights need no copy: use the overload without one.
    /// </summary>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not a 16-bit storage type.</exception>
    public void AdamW<T>(AcceleratorStream s, ArrayView<float> param, ArrayView<float> grad, ArrayView<float> m, ArrayView<float> v, ArrayView<T> copy,
        float lr, float beta1, float beta2, float eps, float weightDecay, float biasCorrection1, float biasCorrection2) where T : unmanaged =>
        AdamW(Copying<T>(), s, param, grad, m, v, copy, lr, beta1, beta2, eps, weightDecay, biasCorrection1, biasCorrection2);

    /// <summary>The SGD step with a 16-bit copy of storage type <typeparamref name="T"/> (<see cref="Bf16"/> or <see cref="Half"/>); as the typed overloads.</summary>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not a 16-bit storage type.</exception>
    public void Sgd<T>(AcceleratorStream s, ArrayView<float> param, ArrayView<float> grad, ArrayView<T> copy, float lr, float weightDecay) where T : unmanaged =>
        Sgd(Copying<T>(), s, param, grad, copy, lr, weightDecay);

    /// <summary>The copying kernels of a 16-bit storage type.</summary>
    private Typed<T> Copying<T>() where T : unmanaged =>
        typeof(T) == typeof(Bf16) ? (Typed<T>)(object)_bf16.Value
        : typeof(T) == typeof(Half) ? (Typed<T>)(object)_fp16.Value
        : throw StorageDispatch.Unsupported<T>();

    private void AdamW<T>(Typed<T> k, AcceleratorStream s, ArrayView<float> param, ArrayView<float> grad, ArrayView<float> m, ArrayView<float> v, ArrayView<T> copy,
        float lr, float beta1, float beta2, float eps, float weightDecay, float biasCorrection1, float biasCorrection2) where T : unmanaged
    {
        Check.SameLength(param, grad, nameof(grad));
        Check.SameLength(param, m, nameof(m));
        Check.SameLength(param, v, nameof(v));
        Check.SameLength(param, copy, nameof(copy));
        if (!(biasCorrection1 > 0f) || !(biasCorrection2 > 0f))
            throw new ArgumentOutOfRangeException(nameof(biasCorrection1),
                $"Bias corrections must be positive (1 - beta^t for step t >= 1); got {biasCorrection1} and {biasCorrection2}.");
        if (param.Length == 0) return;
        k.AdamW(s, Launch.Elementwise(_accelerator, param.Length), param, grad, m, v, copy,
            lr, beta1, beta2, eps, weightDecay, biasCorrection1, biasCorrection2);
    }

    private void Sgd<T>(Typed<T> k, AcceleratorStream s, ArrayView<float> param, ArrayView<float> grad, ArrayView<T> copy, float lr, float weightDecay)
        where T : unmanaged
    {
        Check.SameLength(param, grad, nameof(grad));
        Check.SameLength(param, copy, nameof(copy));
        if (param.Length == 0) return;
        k.Sgd(s, Launch.Elementwise(_accelerator, param.Length), param, grad, copy, lr, weightDecay);
    }

    /// <summary>
    /// One PyTorch AdamW step over <c>param</c>, <c>grad</c>, <c>m</c>, <c>v</c> (all of one length):
    /// <c>p -= lr * wd * p</c> first (decoupled decay), then <c>m = b1 m + (1 - b1) g</c>,
    /// <c>v = b2 v + (1 - b2) g^2</c>, <c>p -= lr * (m / bc1) / (sqrt(v / bc2) + eps)</c>, where
    /// <paramref name="biasCorrection1"/> = <c>1 - b1^t</c> and <paramref name="biasCorrection2"/> = <c>1 - b2^t</c>
    /// for step <c>t</c> (1-based) are computed on the host.
    /// </summary>
    public void AdamW(AcceleratorStream s, ArrayView<float> param, ArrayView<float> grad, ArrayView<float> m, ArrayView<float> v,
        float lr, float beta1, float beta2, float eps, float weightDecay, float biasCorrection1, float biasCorrection2)
    {
        Check.SameLength(param, grad, nameof(grad));
        Check.SameLength(param, m, nameof(m));
        Check.SameLength(param, v, nameof(v));
        if (!(biasCorrection1 > 0f) || !(biasCorrection2 > 0f))
            throw new ArgumentOutOfRangeException(nameof(biasCorrection1),
                $"Bias corrections must be positive (1 - beta^t for step t >= 1); got {biasCorrection1} and {biasCorrection2}.");
        if (param.Length == 0) return;
        _adamW(s, Launch.Elementwise(_accelerator, param.Length), param, grad, m, v,
            lr, beta1, beta2, eps, weightDecay, biasCorrection1, biasCorrection2);
    }

    /// <summary>One SGD step without momentum over <c>param</c>, <c>grad</c> (one length): <c>p -= lr * (g + wd * p)</c>.</summary>
    public void Sgd(AcceleratorStream s, ArrayView<float> param, ArrayView<float> grad, float lr, float weightDecay)
    {
        Check.SameLength(param, grad, nameof(grad));
        if (param.Length == 0) return;
        _sgd(s, Launch.Elementwise(_accelerator, param.Length), param, grad, lr, weightDecay);
    }
}
