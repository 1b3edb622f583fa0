// What the relay's compressed stash allocates, as a static function of the settings, so a planner can predict it exactly.
using L2L.Backends;
using L2L.Backends.Ops;

namespace L2L.Training.Stash;

/// <summary>
/// The bytes <c>CompressedStash</c> allocates for one relay run with a stash codec (any codec but none): the device
/// <c>stash</c> category, its part of the device <c>workspace</c> category, and pinned host memory. The relay's
/// own buffers (the boundary-gradient buffer the codec path keeps for U exact activations, U·n·4 bytes) are not included.
/// </summary>
/// <param name="StashBytes">Device bytes in the <c>stash</c> category.</param>
/// <param name="WorkspaceBytes">Device bytes in the <c>workspace</c> category: one decoded activation (in the run's precision), plus the adaptive codec's 2·L·U estimate floats.</param>
/// <param name="HostBytes">Pinned host bytes: the encoded stash with a host placement, plus the adaptive codec's estimate floats.</param>
public readonly record struct StashFootprint(long StashBytes, long WorkspaceBytes, long HostBytes)
{
    /// <summary>Device bytes in all.</summary>
    public long DeviceBytes => StashBytes + WorkspaceBytes;

    /// <summary>
    /// The footprint for <paramref name="levels"/> stash levels (L, the model's blocks), <paramref name="microBatches"/> (U)
    /// and activations of <paramref name="activationLength"/> values (n = B/U·T·C) stored in <paramref name="precision"/>.
    /// With one tensor <c>words(b) = ceil(n·b/32) + 2·ceil(n/G)</c> 32-bit words:
    /// <list type="bullet">
    /// <item>the pool of L·U tensors: fixed width b, <c>L·U·words(b)</c>; adaptive, <c>U·(P + 2·L·ceil(n/G))</c> where P is
    /// the largest <c>Σ_l ceil(n·b_l/32)</c> over every choice with <c>Σ b_l ≤ floor(L·budget)</c>, so any choice fits;</item>
    /// <item>device stash: the pool; host stash: two slots of <c>words(b_max)</c>, b_max the codec's width, or for adaptive the
    /// widest one level can get (<see cref="AdaptiveBits.MaxLevelBits"/>), and the pool in pinned host memory;</item>
    /// <item>workspace: <c>e·n</c> (the decoded activation, e = 4 bytes for FP32 and 2 for BF16 and FP16), plus <c>8·L·U</c> for
    /// the adaptive codec (each level and micro-batch's range energy and gradient square, FP32), which it also keeps on the host.</item>
    /// </list>
    /// The encoded words do not depend on the precision.
    /// </summary>
    public static StashFootprint Of(StashCodecSettings codec, StashPlacement placement, int levels, int microBatches, long activationLength,
        Precision precision = Precision.Fp32)
    {
        ArgumentNullException.ThrowIfNull(codec);
        if (!codec.Enabled) throw new ArgumentException("The compressed stash needs a codec.", nameof(codec));
        var pool = 4 * PoolWords(codec, levels, microBatches, activationLength);
        var estimates = 4 * EstimateFloats(codec, levels, microBatches);
        var stash = placement == StashPlacement.Device ? pool : 2 * 4 * SlotWords(codec, levels, activationLength);
        var host = (placement == StashPlacement.Host ? pool : 0) + estimates;
        return new StashFootprint(stash, precision.ElementSize() * activationLength + estimates, host);
    }

    /// <summary>Words of one encoded tensor at <paramref name="bits"/>.</summary>
    internal static long TensorWords(StashCodecSettings codec, long activationLength, int bits) =>
        StashCodecOps.EncodedWords(activationLength, codec.GroupSize, bits);

    /// <summary>Words of the pool holding every level's U tensors.</summary>
    internal static long PoolWords(StashCodecSettings codec, int levels, int microBatches, long activationLength)
    {
        if (!codec.IsAdaptive)
            return levels * (long)microBatches * TensorWords(codec, activationLength, codec.Bits);
        var ranges = TensorWords(codec, activationLength, 2) - Kernels.StashCodecKernels.PayloadWords((int)activationLength, 2);
        var payload = AdaptiveBits.MaxPayload(levels, codec.BitsBudget, b => Kernels.StashCodecKernels.PayloadWords((int)activationLength, b));
        return microBatches * (payload + levels * ranges);
    }

    /// <summary>Words of one host-placement slot: one tensor at the widest bits a level can get.</summary>
    internal static long SlotWords(StashCodecSettings codec, int levels, long activationLength) =>
        TensorWords(codec, activationLength, codec.IsAdaptive ? AdaptiveBits.MaxLevelBits(levels, codec.BitsBudget) : codec.Bits);

    /// <summary>Floats of the adaptive codec's estimates: a range energy and a gradient square per level and micro-batch.</summary>
    internal static long EstimateFloats(StashCodecSettings codec, int levels, int microBatches) =>
        codec.IsAdaptive ? 2L * levels * microBatches : 0;
}
