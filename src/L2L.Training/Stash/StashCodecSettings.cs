// Which codec compresses the relay's activation stash, and the byte sizes it gives.
using L2L.Backends.Ops;

namespace L2L.Training.Stash;

/// <summary>How the relay stores the block inputs it stashes for the backward pass.</summary>
public enum StashCodec
{
    /// <summary>FP32, exact.</summary>
    None,
    /// <summary>8 bits per value, per-group min/max, stochastic rounding.</summary>
    Int8,
    /// <summary>4 bits per value.</summary>
    Int4,
    /// <summary>2 bits per value.</summary>
    Int2,
}

/// <summary>The stash codec of a relay run.</summary>
/// <param name="Codec">The bit width, or none.</param>
/// <param name="GroupSize">Values per quantisation group sharing one FP32 min and max (a multiple of 16).</param>
/// <param name="Seed">The run's seed; with the step, stash level and micro-batch it keys the rounding's random stream.</param>
public sealed record StashCodecSettings(StashCodec Codec = StashCodec.None, int GroupSize = StashCodecSettings.DefaultGroupSize, ulong Seed = 0)
{
    /// <summary>The default group size.</summary>
    public const int DefaultGroupSize = 256;

    /// <summary>Whether the stash is compressed.</summary>
    public bool Enabled => Codec != StashCodec.None;

    /// <summary>Bits per stored value: 8, 4, 2, or 32 without a codec.</summary>
    public int Bits => Codec switch
    {
        StashCodec.Int8 => 8,
        StashCodec.Int4 => 4,
        StashCodec.Int2 => 2,
        _ => 32,
    };

    /// <summary>
    /// Bytes of one stashed tensor of <paramref name="values"/> floats: with a codec
    /// <c>4 * (ceil(n * b / 32) + 2 * ceil(n / G))</c> (codes packed in 32-bit words, then an FP32 min and max per group), else <c>4 * n</c>.
    /// </summary>
    public long StashedBytes(long values) => Enabled ? 4 * StashCodecOps.EncodedWords(values, GroupSize, Bits) : 4 * values;

    /// <summary>Throws with a message naming the option when the settings are unusable.</summary>
    public void Validate()
    {
        if (GroupSize <= 0 || GroupSize % Kernels.StashCodecKernels.GroupMultiple != 0)
            throw new ArgumentException($"--stash-group {GroupSize} must be a positive multiple of {Kernels.StashCodecKernels.GroupMultiple} (e.g. 256), so every group's codes fill whole 32-bit words.");
    }
}
