// Launcher for the dropout kernel.
using ILGPU;
using ILGPU.Runtime;
using L2L.Kernels;
using Half = ILGPU.Half;

namespace L2L.Backends.Ops;

/// <summary>
/// Inverted dropout with hashed masks (see <see cref="DropoutKernels"/>), loaded once per accelerator; the
/// <see cref="Bf16"/> and <see cref="Half"/> overloads (loaded on first use) apply the same masks to 16-bit tensors.
/// </summary>
public sealed class DropoutOps
{
    private readonly Accelerator _accelerator;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ulong, long, uint, float> _dropout;

    /// <summary>Loads the kernel on <paramref name="backend"/>'s accelerator.</summary>
    public DropoutOps(Backend backend)
    {
        _accelerator = backend.Accelerator;
        _dropout = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ulong, long, uint, float>(DropoutKernels.DropoutKernel);
        _bf16 = new(() => _accelerator.LoadKernel<ArrayView<Bf16>, ArrayView<Bf16>, ulong, long, uint, float>(DropoutKernels.DropoutGenericKernel<Bf16, Bf16Storage>));
        _fp16 = new(() => _accelerator.LoadKernel<ArrayView<Half>, ArrayView<Half>, ulong, long, uint, float>(DropoutKernels.DropoutGenericKernel<Half, Fp16Storage>));
    }

    private readonly Lazy<Action<AcceleratorStream, KernelConfig, ArrayView<Bf16>, ArrayView<Bf16>, ulong, long, uint, float>> _bf16;
    private readonly Lazy<Action<AcceleratorStream, KernelConfig, ArrayView<Half>, ArrayView<Half>, ulong, long, uint, float>> _fp16;

    /// <summary>Dropout of a BF16 tensor, the same mask as the FP32 overload for the same key and offset.</summary>
    public void Apply(AcceleratorStream s, ArrayView<Bf16> output, ArrayView<Bf16> input, float p, ulong key, long offset) =>
        Apply(_bf16.Value, s, output, input, p, key, offset);

    /// <summary>Dropout of an FP16 tensor, the same mask as the FP32 overload for the same key and offset.</summary>
    public void Apply(AcceleratorStream s, ArrayView<Half> output, ArrayView<Half> input, float p, ulong key, long offset) =>
        Apply(_fp16.Value, s, output, input, p, key, offset);

    /// <summary>
    /// <c>output = dropout(input)</c> with drop probability <paramref name="p"/> in [0, 1), the mask of
    /// <paramref name="key"/> at element indices starting from <paramref name="offset"/>; <c>output</c> may alias <c>input</c>.
    /// The same call on a gradient is the backward.
    /// </summary>
    public void Apply(AcceleratorStream s, ArrayView<float> output, ArrayView<float> input, float p, ulong key, long offset) =>
        Apply(_dropout, s, output, input, p, key, offset);

    /// <summary>Dropout of a tensor of the storage type <typeparamref name="T"/>, the same mask for every type; for float, the FP32 overload's kernel.</summary>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not a storage type.</exception>
    public void Apply<T>(AcceleratorStream s, ArrayView<T> output, ArrayView<T> input, float p, ulong key, long offset) where T : unmanaged =>
        Apply(StorageDispatch.Pick<T, Action<AcceleratorStream, KernelConfig, ArrayView<T>, ArrayView<T>, ulong, long, uint, float>,
            Action<AcceleratorStream, KernelConfig, ArrayView<Bf16>, ArrayView<Bf16>, ulong, long, uint, float>,
            Action<AcceleratorStream, KernelConfig, ArrayView<Half>, ArrayView<Half>, ulong, long, uint, float>>(_dropout, _bf16, _fp16),
            s, output, input, p, key, offset);

    private void Apply<T>(Action<AcceleratorStream, KernelConfig, ArrayView<T>, ArrayView<T>, ulong, long, uint, float> kernel,
        AcceleratorStream s, ArrayView<T> output, ArrayView<T> input, float p, ulong key, long offset) where T : unmanaged
    {
        Check.SameLength(output, input, nameof(input));
        if (!(p >= 0f && p < 1f))
            throw new ArgumentOutOfRangeException(nameof(p), p, "A drop probability must be in [0, 1).");
        if (output.Length == 0) return;
        kernel(s, Launch.Elementwise(_accelerator, output.Length), output, input, key, offset, DropoutKernels.Threshold(p), 1f / (1f - p));
    }
}
