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
    /// <summary>8, 4 or 2 bits per stash level, chosen from an estimate of the gradient variance each adds, under an average-bits budget (<see cref="AdaptiveBits"/>).</summary>
    Adaptive,
}

/// <summary>The stash codec of a relay run.</summary>
/// <param name="Codec">The bit width, adaptive, or none.</param>
/// <param name="GroupSize">Values per quantisation group sharing one FP32 min and max (a multiple of 16).</param>
/// <param name="Seed">The run's seed; with the step, stash level and micro-batch it keys the rounding's random stream.</param>
/// <param name="BitsBudget">Adaptive: the average bits per stash level may not exceed this (in [2, 8]): the levels' bits sum to at most floor(L·budget).</param>
/// <param name="AdaptEvery">Adaptive: the bits are re-estimated at every step that is a multiple of this (step 0 first).</param>
public sealed record StashCodecSettings(StashCodec Codec = StashCodec.None, int GroupSize = StashCodecSettings.DefaultGroupSize, ulong Seed = 0,
    float BitsBudget = StashCodecSettings.DefaultBitsBudget, int AdaptEvery = StashCodecSettings.DefaultAdaptEvery)
{
    /// <summary>The default group size.</summary>
    public const int DefaultGroupSize = 256;

    /// <summary>The default average-bits budget of the adaptive codec.</summary>
    public const float DefaultBitsBudget = 4f;

    /// <summary>The default re-estimation interval of the adaptive codec, in steps.</summary>
    public const int DefaultAdaptEvery = 10;

    /// <summary>Whether the stash is compressed.</summary>
    public bool Enabled => Codec != StashCodec.None;

    /// <summary>Whether the bits are chosen per level (<see cref="StashCodec.Adaptive"/>).</summary>
    public bool IsAdaptive => Codec == StashCodec.Adaptive;

    /// <summary>Bits per stored value of a fixed-width codec: 8, 4, 2, or 32 without a codec; 0 for the adaptive codec, whose width varies by level.</summary>
    public int Bits => Codec switch
    {
        StashCodec.Int8 => 8,
        StashCodec.Int4 => 4,
        StashCodec.Int2 => 2,
        StashCodec.Adaptive => 0,
        _ => 32,
    };

    /// <summary>
    /// Bytes of one stashed tensor of <paramref name="values"/> floats: with a fixed-width codec
    /// <c>4 * (ceil(n * b / 32) + 2 * ceil(n / G))</c> (codes packed in 32-bit words, then an FP32 min and max per group), else <c>4 * n</c>.
    /// For the adaptive codec use <see cref="StashedBytes(long, int)"/>.
    /// </summary>
    public long StashedBytes(long values) => IsAdaptive
        ? throw new InvalidOperationException("The adaptive codec's stashed size depends on each level's bits; call StashedBytes(values, bits).")
        : Enabled ? 4 * StashCodecOps.EncodedWords(values, GroupSize, Bits) : 4 * values;

    /// <summary>Bytes of one stashed tensor of <paramref name="values"/> floats encoded at <paramref name="bits"/> (8, 4 or 2) bits.</summary>
    public long StashedBytes(long values, int bits) => 4 * StashCodecOps.EncodedWords(values, GroupSize, bits);

    /// <summary>Throws with a message naming the option when the settings are unusable.</summary>
    public void Validate()
    {
        if (GroupSize <= 0 || GroupSize % Kernels.StashCodecKernels.GroupMultiple != 0)
            throw new ArgumentException($"--stash-group {GroupSize} must be a positive multiple of {Kernels.StashCodecKernels.GroupMultiple} (e.g. 256), so every group's codes fill whole 32-bit words.");
        if (!(BitsBudget >= 2f && BitsBudget <= 8f))
            throw new ArgumentException($"--stash-bits-budget {BitsBudget.ToString(System.Globalization.CultureInfo.InvariantCulture)} must be in [2, 8]: the average bits per stash level, each level stored at 2, 4 or 8 bits.");
        if (AdaptEvery < 1)
            throw new ArgumentException($"--stash-adapt-every {AdaptEvery} must be at least 1 (steps between re-estimates of the adaptive codec's bits).");
    }
}
