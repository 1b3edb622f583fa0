// Launchers for the fused softmax + cross-entropy over the vocabulary.
using ILGPU;
using ILGPU.Runtime;
using L2L.Kernels;

namespace L2L.Backends.Ops;

/// <summary>Softmax cross-entropy over rows of logits (N, V); kernels loaded once per accelerator.</summary>
public sealed class CrossEntropyOps
{
    private readonly Accelerator _accelerator;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<int>, int, int, float, int> _forwardBackward;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, int> _forward;

    /// <summary>Loads the kernels on <paramref name="backend"/>'s accelerator.</summary>
    public CrossEntropyOps(Backend backend)
    {
        _accelerator = backend.Accelerator;
        _forwardBackward = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>,
            ArrayView<int>, int, int, float, int>(CrossEntropyKernels.CrossEntropyForwardBackwardKernel);
        _forward = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, int>(
            CrossEntropyKernels.CrossEntropyForwardKernel);
    }

    /// <summary>
    /// <c>losses</c> (N) = <c>-log softmax(logits)[target]</c> (0 where the target is <paramref name="ignoreIndex"/>)
    /// and <c>dLogits</c> (N, V) = <c>(softmax - onehot(target)) * dLossScale</c> (zero rows where ignored), from
    /// <c>logits</c> (N, V) and <c>targets</c> (N) int32. <c>dLogits</c> may alias <c>logits</c>. A target outside
    /// <c>[0, V)</c> that is not <paramref name="ignoreIndex"/> yields NaN in its row.
    /// </summary>
    public void ForwardBackward(AcceleratorStream s, ArrayView<float> losses, ArrayView<float> dLogits, ArrayView<float> logits,
        ArrayView<int> targets, int n, int v, float dLossScale, int ignoreIndex = -1)
    {
        CheckShapes(losses, logits, targets, n, v);
        Check.Length(dLogits, (long)n * v, nameof(dLogits));
        _forwardBackward(s, RowLaunch.Rows(_accelerator, n, v), losses, dLogits, logits, targets, n, v, dLossScale, ignoreIndex);
    }

    /// <summary>
    /// <c>losses</c> (N) = <c>-log softmax(logits)[target]</c> (0 where the target is <paramref name="ignoreIndex"/>),
    /// from <c>logits</c> (N, V) and <c>targets</c> (N) int32.
    /// </summary>
    public void Forward(AcceleratorStream s, ArrayView<float> losses, ArrayView<float> logits, ArrayView<int> targets,
        int n, int v, int ignoreIndex = -1)
    {
        CheckShapes(losses, logits, targets, n, v);
        _forward(s, RowLaunch.Rows(_accelerator, n, v), losses, logits, targets, n, v, ignoreIndex);
    }

    private static void CheckShapes(ArrayView<float> losses, ArrayView<float> logits, ArrayView<int> targets, int n, int v)
    {
        Check.Positive(n, nameof(n));
        Check.Positive(v, nameof(v));
        Check.Length(losses, n, nameof(losses));
        Check.Length(targets, n, nameof(targets));
        Check.Length(logits, (long)n * v, nameof(logits));
    }
}
