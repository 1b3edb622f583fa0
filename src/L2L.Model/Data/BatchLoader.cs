// Cuts a token source into (B, T) input/target batches, in order or in a seeded shuffled order.
namespace L2L.Model.Data;

/// <summary>
/// Produces training batches from a token source. Step <c>s</c>, row <c>b</c> uses window number
/// <c>w = s·B + b</c>: T+1 tokens whose first T are the inputs and last T the targets (the inputs
/// shifted by one). In order, window <c>w</c> starts at token <c>w·T</c>, wrapping around the source.
/// Shuffled, the window starts (multiples of T) are visited in a seeded permutation, a new one each
/// epoch, so any step can be produced directly (resuming needs only the step number).
/// </summary>
/// <remarks>
/// The permutation is computed, not stored: a keyed Feistel network over the window indices with
/// cycle walking, so memory stays constant however long the data is. <see cref="Fill"/> is safe to
/// call from several threads as long as the source's <see cref="ITokenSource.Read"/> is.
/// </remarks>
public sealed class BatchLoader : IBatchSource
{
    private const int FeistelRounds = 4;

    private readonly ITokenSource _source;
    private readonly bool _shuffle;
    private readonly int _seed;
    private readonly int _halfBits;

    /// <summary>Creates a loader of <paramref name="batch"/> sequences of <paramref name="seqLen"/> tokens per step.</summary>
    public BatchLoader(ITokenSource source, int batch, int seqLen, bool shuffle = false, int seed = 0)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batch);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(seqLen);
        if (source.Length <= 0) throw new ArgumentException($"Token source {source.Description} is empty.", nameof(source));
        _source = source;
        Batch = batch;
        SeqLen = seqLen;
        _shuffle = shuffle;
        _seed = seed;
        WindowsPerEpoch = Math.Max(1, source.Length / seqLen);
        var bits = 64 - System.Numerics.BitOperations.LeadingZeroCount((ulong)(WindowsPerEpoch - 1));
        _halfBits = (bits + 1) / 2;
    }

    /// <summary>Sequences per step, B.</summary>
    public int Batch { get; }

    /// <summary>Tokens per sequence, T.</summary>
    public int SeqLen { get; }

    /// <summary>Distinct windows (start positions) per pass over the data, max(1, ⌊length / T⌋).</summary>
    public long WindowsPerEpoch { get; }

    /// <summary>The token where window number <paramref name="window"/> (= step·B + row) starts.</summary>
    public long WindowStart(long window)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(window);
        if (!_shuffle) return window * SeqLen % _source.Length;
        var epoch = window / WindowsPerEpoch;
        return Permute(window % WindowsPerEpoch, epoch) * SeqLen;
    }

    /// <summary>
    /// Fills the (B, T) row-major <paramref name="inputs"/> and <paramref name="targets"/> of step
    /// <paramref name="step"/>.
    /// </summary>
    public void Fill(long step, Span<int> inputs, Span<int> targets)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(step);
        var size = (long)Batch * SeqLen;
        if (inputs.Length != size) throw new ArgumentException($"inputs has {inputs.Length} elements, expected B*T = {size}.", nameof(inputs));
        if (targets.Length != size) throw new ArgumentException($"targets has {targets.Length} elements, expected B*T = {size}.", nameof(targets));
        var window = new int[SeqLen + 1];
        for (var b = 0; b < Batch; b++)
        {
            _source.Read(WindowStart(step * Batch + b), window);
            window.AsSpan(0, SeqLen).CopyTo(inputs.Slice(b * SeqLen, SeqLen));
            window.AsSpan(1, SeqLen).CopyTo(targets.Slice(b * SeqLen, SeqLen));
        }
    }

    private long Permute(long index, long epoch)
    {
        if (WindowsPerEpoch == 1) return 0;
        var key = SplitMix64.Mix((ulong)(uint)_seed, (ulong)epoch);
        var x = (ulong)index;
        // Cycle walking: the network permutes [0, 4^halfBits); stepping until the value lands below the window count permutes [0, windows).
        do x = Feistel(x, key);
        while (x >= (ulong)WindowsPerEpoch);
        return (long)x;
    }

    private ulong Feistel(ulong x, ulong key)
    {
        var mask = (1UL << _halfBits) - 1;
        var left = x >> _halfBits;
        var right = x & mask;
        for (var round = 0UL; round < FeistelRounds; round++)
        {
            var f = SplitMix64.Mix(key + round, right) & mask;
            (left, right) = (right, left ^ f);
        }
        return (left << _halfBits) | right;
    }
}
