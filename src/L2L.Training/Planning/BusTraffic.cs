// Host<->device bytes of a step, split by what they carry.
namespace L2L.Training.Planning;

/// <summary>
/// Bytes that crossed the bus, by kind: <c>weights</c> (layer fetches), <c>grads</c> (parameter gradients to the host, in the
/// run's precision), <c>stash</c> (stashed block inputs, FP32 or encoded), <c>boundary_grads</c> (gradients at
/// layer boundaries through a host stash) and <c>io</c> (token ids, token types, padding masks, targets, scatter plans
/// and the loss and the per-layer gradient sums of squares read back, all FP32 or int32).
/// </summary>
public readonly record struct BusTraffic(long Weights, long Grads, long Stash, long BoundaryGrads, long Io)
{
    /// <summary>All kinds together.</summary>
    public long Total => Weights + Grads + Stash + BoundaryGrads + Io;

    /// <summary>Kind by kind difference (the traffic of a step from two running totals).</summary>
    public static BusTraffic operator -(BusTraffic a, BusTraffic b) =>
        new(a.Weights - b.Weights, a.Grads - b.Grads, a.Stash - b.Stash, a.BoundaryGrads - b.BoundaryGrads, a.Io - b.Io);

    /// <summary>Kind by kind sum (the traffic of several devices).</summary>
    public static BusTraffic operator +(BusTraffic a, BusTraffic b) =>
        new(a.Weights + b.Weights, a.Grads + b.Grads, a.Stash + b.Stash, a.BoundaryGrads + b.BoundaryGrads, a.Io + b.Io);

    /// <summary>The kinds by their metric names, in a fixed order.</summary>
    public IReadOnlyDictionary<string, long> ByKind() => new SortedDictionary<string, long>(StringComparer.Ordinal)
    {
        ["weights"] = Weights,
        ["grads"] = Grads,
        ["stash"] = Stash,
        ["boundary_grads"] = BoundaryGrads,
        ["io"] = Io,
    };
}
