// Per-step host plans for the deterministic embedding gradient, one per micro-batch, in pinned memory.
using ILGPU;
using ILGPU.Runtime;
using L2L.Backends;
using L2L.Backends.Ops;

namespace L2L.Model.Device;

/// <summary>
/// Builds, for every micro-batch of a step, the <see cref="EmbeddingScatterPlan"/> of its input
/// tokens, and uploads one at a time before that micro-batch's embedding backward. The host
/// buffer holds all U plans, so none is overwritten while its upload may still be in flight.
/// </summary>
public sealed class ScatterPlans : IDisposable
{
    private readonly PinnedHostBuffer<int> _plans;
    private readonly int[] _segments;
    private readonly int _tokens;
    private readonly int _length;

    /// <summary>Room for <paramref name="microBatches"/> plans of <paramref name="tokensPerMicroBatch"/> tokens.</summary>
    public ScatterPlans(Backend backend, int microBatches, int tokensPerMicroBatch)
    {
        _tokens = tokensPerMicroBatch;
        _length = EmbeddingScatterPlan.Length(tokensPerMicroBatch);
        _plans = backend.AllocatePinned<int>((long)microBatches * _length);
        _segments = new int[microBatches];
    }

    /// <summary>Ints in one plan (the length of the device buffer it is uploaded to).</summary>
    public int PlanLength => _length;

    /// <summary>Builds every micro-batch's plan from the step's (U·B·T) input tokens.</summary>
    public void Build(ReadOnlySpan<int> inputs)
    {
        for (var u = 0; u < _segments.Length; u++)
            _segments[u] = EmbeddingScatterPlan.Build(inputs.Slice(u * _tokens, _tokens), _plans.Span.Slice(u * _length, _length));
    }

    /// <summary>Distinct tokens in micro-batch <paramref name="u"/>.</summary>
    public int Segments(int u) => _segments[u];

    /// <summary>Enqueues the upload of micro-batch <paramref name="u"/>'s plan on <paramref name="stream"/>.</summary>
    public void Upload(AcceleratorStream stream, int u, ArrayView<int> target) =>
        _plans.CopyToDeviceAsync(stream, target, (long)u * _length, _length);

    /// <inheritdoc/>
    public void Dispose() => _plans.Dispose();
}
