// Which contiguous block of every layer a rank owns when the optimizer state is sharded, and how its state maps to the full layout.
using L2L.Model;

namespace L2L.Training.Parallel;

/// <summary>
/// Rank r of R owns elements [r·S, min(n, (r+1)·S)) of a layer of n parameters, S = ⌈n / R⌉ (the last shard is short,
/// or empty, and padded to S in the collectives). A shard's optimizer state holds, for each tensor the shard overlaps in
/// order, that piece's state in the optimizer's layout (its <c>m</c>, then its <c>v</c>); the full layout is the same
/// per whole tensor, so a snapshot gathered from every rank is exactly the unsharded state.
/// </summary>
public static class ShardLayout
{
    /// <summary>S, the elements of one rank's shard of a layer of <paramref name="length"/> parameters (the padded block of the collectives).</summary>
    public static long ShardLength(long length, int ranks) => ranks <= 1 ? length : (length + ranks - 1) / ranks;

    /// <summary>The range [Lo, Hi) of a layer of <paramref name="length"/> parameters that <paramref name="rank"/> owns.</summary>
    public static (long Lo, long Hi) Range(long length, int ranks, int rank)
    {
        var s = ShardLength(length, ranks);
        var lo = Math.Min(length, rank * s);
        return (lo, Math.Min(length, lo + s));
    }

    /// <summary>
    /// Copies the state of the pieces of <paramref name="layer"/> inside [<paramref name="lo"/>, <paramref name="hi"/>)
    /// between a shard's state (<paramref name="statePerParam"/> × (hi − lo) floats) and the full layer's state.
    /// </summary>
    public static void CopyState(LayerLayout layer, int statePerParam, long lo, long hi, Span<float> shard, Span<float> full, bool toFull)
    {
        long pos = 0;
        foreach (var t in layer.Tensors)
        {
            var a = Math.Max(lo, t.Offset);
            var b = Math.Min(hi, t.Offset + t.Length);
            if (a >= b) continue;
            var len = (int)(b - a);
            for (var c = 0; c < statePerParam; c++)
            {
                var fullPart = full.Slice((int)(statePerParam * t.Offset + c * t.Length + (a - t.Offset)), len);
                var shardPart = shard.Slice((int)(statePerParam * pos + c * len), len);
                if (toFull) shardPart.CopyTo(fullPart);
                else fullPart.CopyTo(shardPart);
            }
            pos += len;
        }
    }
}
