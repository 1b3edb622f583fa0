// Launchers for the fused softmax + cross-entropy over the vocabulary, with FP32, BF16 or FP16 logits.
using ILGPU;
using ILGPU.Runtime;
using L2L.Kernels;
using Half = ILGPU.Half;

namespace L2L.Backends.Ops;

/// <summary>
/// Softmax cross-entropy over rows of logits (N, V); kernels loaded once per accelerator. The <see cref="Bf16"/> and
/// <see cref="Half"/> overloads (kernels loaded on first use) read 16-bit logits and write 16-bit <c>dLogits</c>; the
/// row max, the sum of exponentials and the losses are FP32.
/// </summary>
public sealed class CrossEntropyOps
{
    private readonly Accelerator _accelerator;
    private readonly Typed<float> _fp32;
    private readonly Lazy<Typed<Bf16>> _bf16;
    private readonly Lazy<Typed<Half>> _fp16;

    private sealed class Typed<T> where T : unmanaged
    {
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<T>, ArrayView<T>,
            ArrayView<int>, int, int, float, int> ForwardBackward = null!;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<T>, ArrayView<int>, int, int, int> Forward = null!;
    }

    /// <summary>Loads the kernels on <paramref name="backend"/>'s accelerator.</summary>
    public CrossEntropyOps(Backend backend)
    {
        _accelerator = backend.Accelerator;
        _fp32 = new Typed<float>
        {
            ForwardBackward = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>,
                ArrayView<int>, int, int, float, int>(CrossEntropyKernels.CrossEntropyForwardBackwardKernel),
            Forward = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, int>(
                CrossEntropyKernels.CrossEntropyForwardKernel),
        };
        _bf16 = new(Load<Bf16, Bf16Storage>);
        _fp16 = new(Load<Half, Fp16Storage>);
    }

    private Typed<T> Load<T, S>() where T : unmanaged where S : struct, IStorage<T> => new()
    {
        ForwardBackward = _accelerator.LoadKernel<ArrayView<float>, ArrayView<T>, ArrayView<T>,
            ArrayView<int>, int, int, float, int>(CrossEntropyKernels.CrossEntropyForwardBackwardGenericKernel<T, S>),
        Forward = _accelerator.LoadKernel<ArrayView<float>, ArrayView<T>, ArrayView<int>, int, int, int>(
            CrossEntropyKernels.CrossEntropyForwardGenericKernel<T, S>),
    };

    /// <summary>
    /// <c>losses</c> (N) = <c>-log softmax(logits)[target]</c> (0 where the target is <paramref name="ignoreIndex"/>)
    /// and <c>dLogits</c> (N, V) = <c>(softmax - onehot(target)) * dLossScale</c> (zero rows where ignored), from
    /// <c>logits</c> (N, V) and <c>targets</c> (N) int32. <c>dLogits</c> may alias <c>logits</c>. A target outside
    /// <c>[0, V)</c> that is not <paramref name="ignoreIndex"/> yields NaN in its row.
    /// </summary>
    public void ForwardBackward(AcceleratorStream s, ArrayView<float> losses, ArrayView<float> dLogits, ArrayView<float> logits,
        ArrayView<int> targets, int n, int v, float dLossScale, int ignoreIndex = -1) =>
        ForwardBackward(_fp32, s, losses, dLogits, logits, targets, n, v, dLossScale, ignoreIndex);

    /// <summary>The fused loss and gradient with BF16 logits and dLogits (FP32 losses); as the FP32 overload.</summary>
    public void ForwardBackward(AcceleratorStream s, ArrayView<float> losses, ArrayView<Bf16> dLogits, ArrayView<Bf16> logits,
        ArrayView<int> targets, int n, int v, float dLossScale, int ignoreIndex = -1) =>
        ForwardBackward(_bf16.Value, s, losses, dLogits, logits, targets, n, v, dLossScale, ignoreIndex);

    /// <summary>The fused loss and gradient with FP16 logits and dLogits (FP32 losses); as the FP32 overload.</summary>
    public void ForwardBackward(AcceleratorStream s, ArrayView<float> losses, ArrayView<Half> dLogits, ArrayView<Half> logits,
        ArrayView<int> targets, int n, int v, float dLossScale, int ignoreIndex = -1) =>
        ForwardBackward(_fp16.Value, s, losses, dLogits, logits, targets, n, v, dLossScale, ignoreIndex);

    /// <summary>
    /// <c>losses</c> (N) = <c>-log softmax(logits)[target]</c> (0 where the target is <paramref name="ignoreIndex"/>),
    /// from <c>logits</c> (N, V) and <c>targets</c> (N) int32.
    /// </summary>
    public void Forward(AcceleratorStream s, ArrayView<float> losses, ArrayView<float> logits, ArrayView<int> targets,
        int n, int v, int ignoreIndex = -1) => Forward(_fp32, s, losses, logits, targets, n, v, ignoreIndex);

    /// <summary>The losses (FP32) of BF16 logits; as the FP32 overload.</summary>
    public void Forward(AcceleratorStream s, ArrayView<float> losses, ArrayView<Bf16> logits, ArrayView<int> targets,
        int n, int v, int ignoreIndex = -1) => Forward(_bf16.Value, s, losses, logits, targets, n, v, ignoreIndex);

    /// <summary>The losses (FP32) of FP16 logits; as the FP32 overload.</summary>
    public void Forward(AcceleratorStream s, ArrayView<float> losses, ArrayView<Half> logits, ArrayView<int> targets,
        int n, int v, int ignoreIndex = -1) => Forward(_fp16.Value, s, losses, logits, targets, n, v, ignoreIndex);

    /// <summary>The fused loss and gradient over the storage type <typeparamref name="T"/> (FP32 losses); for float, the FP32 overload's kernel.</summary>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not a storage type.</exception>
    public void ForwardBackward<T>(AcceleratorStream s, ArrayView<float> losses, ArrayView<T> dLogits, ArrayView<T> logits,
        ArrayView<int> targets, int n, int v, float dLossScale, int ignoreIndex = -1) where T : unmanaged =>
        ForwardBackward(Kernels<T>(), s, losses, dLogits, logits, targets, n, v, dLossScale, ignoreIndex);

    /// <summary>The losses (FP32) of logits of the storage type <typeparamref name="T"/>; for float, the FP32 overload's kernel.</summary>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not a storage type.</exception>
    public void Forward<T>(AcceleratorStream s, ArrayView<float> losses, ArrayView<T> logits, ArrayView<int> targets,
        int n, int v, int ignoreIndex = -1) where T : unmanaged => Forward(Kernels<T>(), s, losses, logits, targets, n, v, ignoreIndex);

    private Typed<T> Kernels<T>() where T : unmanaged => StorageDispatch.Pick<T, Typed<T>, Typed<Bf16>, Typed<Half>>(_fp32, _bf16, _fp16);

    private void ForwardBackward<T>(Typed<T> k, AcceleratorStream s, ArrayView<float> losses, ArrayView<T> dLogits, ArrayView<T> logits,
        ArrayView<int> targets, int n, int v, float dLossScale, int ignoreIndex) where T : unmanaged
    {
        CheckShapes(losses, logits, targets, n, v);
        Check.Length(dLogits, (long)n * v, nameof(dLogits));
        k.ForwardBackward(s, RowLaunch.Rows(_accelerator, n, v), losses, dLogits, logits, targets, n, v, dLossScale, ignoreIndex);
    }

    private void Forward<T>(Typed<T> k, AcceleratorStream s, ArrayView<float> losses, ArrayView<T> logits, ArrayView<int> targets,
        int n, int v, int ignoreIndex) where T : unmanaged
    {
        CheckShapes(losses, logits, targets, n, v);
        k.Forward(s, RowLaunch.Rows(_accelerator, n, v), losses, logits, targets, n, v, ignoreIndex);
    }

    private static void CheckShapes<T>(ArrayView<float> losses, ArrayView<T> logits, ArrayView<int> targets, int n, int v) where T : unmanaged
    {
        Check.Positive(n, nameof(n));
        Check.Positive(v, nameof(v));
        Check.Length(losses, n, nameof(losses));
        Check.Length(targets, n, nameof(targets));
        Check.Length(logits, (long)n * v, nameof(logits));
    }
}
