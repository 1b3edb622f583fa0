// Launchers for GELU: GPT-2's tanh approximation and BERT's exact (erf) form.
using ILGPU;
using ILGPU.Runtime;
using L2L.Kernels;
using Half = ILGPU.Half;

namespace L2L.Backends.Ops;

/// <summary>
/// GELU element-wise: <c>Forward</c> / <c>Backward</c> are the tanh approximation
/// <c>0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))</c>, <c>ForwardErf</c> / <c>BackwardErf</c>
/// the exact <c>0.5 x (1 + erf(x / sqrt 2))</c>; kernels loaded once per accelerator. Each has <see cref="Bf16"/> and
/// <see cref="Half"/> overloads (kernels loaded on first use) that widen to FP32, compute in FP32 and round once on store.
/// </summary>
public sealed class GeluOps
{
    private readonly Accelerator _accelerator;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>> _forward;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>> _backward;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>> _forwardErf;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>> _backwardErf;

    /// <summary>Loads the kernels on <paramref name="backend"/>'s accelerator.</summary>
    public GeluOps(Backend backend)
    {
        _accelerator = backend.Accelerator;
        _forward = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>>(GeluKernels.GeluForwardKernel);
        _backward = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>>(GeluKernels.GeluBackwardKernel);
        _forwardErf = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>>(GeluKernels.GeluErfForwardKernel);
        _backwardErf = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>>(GeluKernels.GeluErfBackwardKernel);
        _bf16 = new(() => Typed<Bf16>.Load<Bf16Storage>(_accelerator));
        _fp16 = new(() => Typed<Half>.Load<Fp16Storage>(_accelerator));
        _fp32 = new Typed<float>(_forward, _backward, _forwardErf, _backwardErf);
    }

    private readonly Typed<float> _fp32;
    private readonly Lazy<Typed<Bf16>> _bf16;
    private readonly Lazy<Typed<Half>> _fp16;

    private sealed class Typed<T>(
        Action<AcceleratorStream, KernelConfig, ArrayView<T>, ArrayView<T>> forward,
        Action<AcceleratorStream, KernelConfig, ArrayView<T>, ArrayView<T>, ArrayView<T>> backward,
        Action<AcceleratorStream, KernelConfig, ArrayView<T>, ArrayView<T>> forwardErf,
        Action<AcceleratorStream, KernelConfig, ArrayView<T>, ArrayView<T>, ArrayView<T>> backwardErf) where T : unmanaged
    {
        public readonly Action<AcceleratorStream, KernelConfig, ArrayView<T>, ArrayView<T>> Forward = forward, ForwardErf = forwardErf;
        public readonly Action<AcceleratorStream, KernelConfig, ArrayView<T>, ArrayView<T>, ArrayView<T>> Backward = backward, BackwardErf = backwardErf;

        public static Typed<T> Load<S>(Accelerator a) where S : struct, IStorage<T> => new(
            a.LoadKernel<ArrayView<T>, ArrayView<T>>(GeluKernels.GeluForwardGenericKernel<T, S>),
            a.LoadKernel<ArrayView<T>, ArrayView<T>, ArrayView<T>>(GeluKernels.GeluBackwardGenericKernel<T, S>),
            a.LoadKernel<ArrayView<T>, ArrayView<T>>(GeluKernels.GeluErfForwardGenericKernel<T, S>),
            a.LoadKernel<ArrayView<T>, ArrayView<T>, ArrayView<T>>(GeluKernels.GeluErfBackwardGenericKernel<T, S>));
    }

    private Typed<T> Kernels<T>() where T : unmanaged => StorageDispatch.Pick<T, Typed<T>, Typed<Bf16>, Typed<Half>>(_fp32, _bf16, _fp16);

    /// <summary>Tanh GELU forward over the storage type <typeparamref name="T"/>; for float, the FP32 overload's kernel.</summary>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not a storage type.</exception>
    public void Forward<T>(AcceleratorStream s, ArrayView<T> output, ArrayView<T> input) where T : unmanaged => Unary(Kernels<T>().Forward, s, output, input);

    /// <summary>Tanh GELU backward over the storage type <typeparamref name="T"/>; for float, the FP32 overload's kernel.</summary>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not a storage type.</exception>
    public void Backward<T>(AcceleratorStream s, ArrayView<T> dInput, ArrayView<T> dOutput, ArrayView<T> input) where T : unmanaged =>
        Binary(Kernels<T>().Backward, s, dInput, dOutput, input);

    /// <summary>Exact GELU forward over the storage type <typeparamref name="T"/>; for float, the FP32 overload's kernel.</summary>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not a storage type.</exception>
    public void ForwardErf<T>(AcceleratorStream s, ArrayView<T> output, ArrayView<T> input) where T : unmanaged => Unary(Kernels<T>().ForwardErf, s, output, input);

    /// <summary>Exact GELU backward over the storage type <typeparamref name="T"/>; for float, the FP32 overload's kernel.</summary>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not a storage type.</exception>
    public void BackwardErf<T>(AcceleratorStream s, ArrayView<T> dInput, ArrayView<T> dOutput, ArrayView<T> input) where T : unmanaged =>
        Binary(Kernels<T>().BackwardErf, s, dInput, dOutput, input);

    /// <summary>Tanh GELU forward in BF16 storage; as <see cref="Forward(AcceleratorStream, ArrayView{float}, ArrayView{float})"/>.</summary>
    public void Forward(AcceleratorStream s, ArrayView<Bf16> output, ArrayView<Bf16> input) => Unary(_bf16.Value.Forward, s, output, input);

    /// <summary>Tanh GELU forward in FP16 storage.</summary>
    public void Forward(AcceleratorStream s, ArrayView<Half> output, ArrayView<Half> input) => Unary(_fp16.Value.Forward, s, output, input);

    /// <summary>Tanh GELU backward in BF16 storage; as <see cref="Backward(AcceleratorStream, ArrayView{float}, ArrayView{float}, ArrayView{float})"/>.</summary>
    public void Backward(AcceleratorStream s, ArrayView<Bf16> dInput, ArrayView<Bf16> dOutput, ArrayView<Bf16> input) => Binary(_bf16.Value.Backward, s, dInput, dOutput, input);

    /// <summary>Tanh GELU backward in FP16 storage.</summary>
    public void Backward(AcceleratorStream s, ArrayView<Half> dInput, ArrayView<Half> dOutput, ArrayView<Half> input) => Binary(_fp16.Value.Backward, s, dInput, dOutput, input);

    /// <summary>Exact GELU forward in BF16 storage.</summary>
    public void ForwardErf(AcceleratorStream s, ArrayView<Bf16> output, ArrayView<Bf16> input) => Unary(_bf16.Value.ForwardErf, s, output, input);

    /// <summary>Exact GELU forward in FP16 storage.</summary>
    public void ForwardErf(AcceleratorStream s, ArrayView<Half> output, ArrayView<Half> input) => Unary(_fp16.Value.ForwardErf, s, output, input);

    /// <summary>Exact GELU backward in BF16 storage.</summary>
    public void BackwardErf(AcceleratorStream s, ArrayView<Bf16> dInput, ArrayView<Bf16> dOutput, ArrayView<Bf16> input) => Binary(_bf16.Value.BackwardErf, s, dInput, dOutput, input);

    /// <summary>Exact GELU backward in FP16 storage.</summary>
    public void BackwardErf(AcceleratorStream s, ArrayView<Half> dInput, ArrayView<Half> dOutput, ArrayView<Half> input) => Binary(_fp16.Value.BackwardErf, s, dInput, dOutput, input);

    private void Unary<T>(Action<AcceleratorStream, KernelConfig, ArrayView<T>, ArrayView<T>> kernel, AcceleratorStream s, ArrayView<T> output, ArrayView<T> input)
        where T : unmanaged
    {
        Check.SameLength(output, input, nameof(input));
        if (output.Length == 0) return;
        kernel(s, Launch.Elementwise(_accelerator, output.Length), output, input);
    }

    private void Binary<T>(Action<AcceleratorStream, KernelConfig, ArrayView<T>, ArrayView<T>, ArrayView<T>> kernel, AcceleratorStream s,
        ArrayView<T> dInput, ArrayView<T> dOutput, ArrayView<T> input) where T : unmanaged
    {
        Check.SameLength(dInput, dOutput, nameof(dOutput));
        Check.SameLength(dInput, input, nameof(input));
        if (dInput.Length == 0) return;
        kernel(s, Launch.Elementwise(_accelerator, dInput.Length), dInput, dOutput, input);
    }

    /// <summary><c>output = gelu(input)</c>, both of one length; <c>output</c> may alias <c>input</c>.</summary>
    public void Forward(AcceleratorStream s, ArrayView<float> output, ArrayView<float> input)
    {
        Check.SameLength(output, input, nameof(input));
        if (output.Length == 0) return;
        _forward(s, Launch.Elementwise(_accelerator, output.Length), output, input);
    }

    /// <summary><c>dInput = dOutput * gelu'(input)</c> (assigned), all of one length; <c>dInput</c> may alias <c>dOutput</c>.</summary>
    public void Backward(AcceleratorStream s, ArrayView<float> dInput, ArrayView<float> dOutput, ArrayView<float> input)
    {
        Check.SameLength(dInput, dOutput, nameof(dOutput));
        Check.SameLength(dInput, input, nameof(input));
        if (dInput.Length == 0) return;
        _backward(s, Launch.Elementwise(_accelerator, dInput.Length), dInput, dOutput, input);
    }

    /// <summary><c>output = 0.5 x (1 + erf(x / sqrt 2))</c>, both of one length; <c>output</c> may alias <c>input</c>.</summary>
    public void ForwardErf(AcceleratorStream s, ArrayView<float> output, ArrayView<float> input)
    {
        Check.SameLength(output, input, nameof(input));
        if (output.Length == 0) return;
        _forwardErf(s, Launch.Elementwise(_accelerator, output.Length), output, input);
    }

    /// <summary><c>dInput = dOutput * gelu'(input)</c> for exact GELU (assigned), all of one length; <c>dInput</c> may alias <c>dOutput</c>.</summary>
    public void BackwardErf(AcceleratorStream s, ArrayView<float> dInput, ArrayView<float> dOutput, ArrayView<float> input)
    {
        Check.SameLength(dInput, dOutput, nameof(dOutput));
        Check.SameLength(dInput, input, nameof(input));
        if (dInput.Length == 0) return;
        _backwardErf(s, Launch.Elementwise(_accelerator, dInput.Length), dInput, dOutput, input);
    }
}
