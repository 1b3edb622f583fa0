// Launchers for the stash codec: encode FP32 to packed 8/4/2-bit codes with per-group ranges, and decode back.
using ILGPU;
using ILGPU.Runtime;
using L2L.Kernels;

namespace L2L.Backends.Ops;

/// <summary>How the encode kernel spreads its work (see <see cref="StashCodecKernels.StashEncodeKernel"/>).</summary>
public enum StashEncodeLayout
{
    /// <summary>Cooperative on GPUs, one quantisation group per thread on the CPU accelerator.</summary>
    Auto,
    /// <summary>A thread group per quantisation group, min and max reduced through shared memory.</summary>
    Cooperative,
    /// <summary>Each thread encodes whole quantisation groups alone, with no barriers.</summary>
    PerThread,
}

/// <summary>The stash codec's kernels, loaded once per accelerator; sizes follow <see cref="StashCodecKernels"/>' layout.</summary>
public sealed class StashCodecOps
{
    private readonly Accelerator _accelerator;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<uint>, ArrayView<float>, int, int, ulong, int> _encode;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<uint>, int, int> _decode;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<uint>, int, int, int> _rangeEnergy;

    /// <summary>Loads the kernels on <paramref name="backend"/>'s accelerator.</summary>
    public StashCodecOps(Backend backend)
    {
        _accelerator = backend.Accelerator;
        _encode = _accelerator.LoadKernel<ArrayView<uint>, ArrayView<float>, int, int, ulong, int>(StashCodecKernels.StashEncodeKernel);
        _decode = _accelerator.LoadKernel<ArrayView<float>, ArrayView<uint>, int, int>(StashCodecKernels.StashDecodeKernel);
        _rangeEnergy = _accelerator.LoadKernel<ArrayView<float>, ArrayView<uint>, int, int, int>(StashCodecKernels.StashRangeEnergyKernel);
    }

    /// <summary>
    /// Words of one encoded tensor of <paramref name="n"/> values: <c>ceil(n * b / 32)</c> payload words
    /// plus <c>2 * ceil(n / G)</c> range words (FP32 min and max per group).
    /// </summary>
    public static long EncodedWords(long n, int groupSize, int bits)
    {
        CheckFormat(n, groupSize, bits);
        return StashCodecKernels.EncodedWords((int)n, groupSize, bits);
    }

    /// <summary>Throws unless the bit width is 2, 4 or 8, the group a positive multiple of 16, and n fits a 32-bit index.</summary>
    public static void CheckFormat(long n, int groupSize, int bits)
    {
        if (bits is not (2 or 4 or 8))
            throw new ArgumentOutOfRangeException(nameof(bits), bits, "The stash codec stores 8, 4 or 2 bits per value.");
        if (groupSize <= 0 || groupSize % StashCodecKernels.GroupMultiple != 0)
            throw new ArgumentOutOfRangeException(nameof(groupSize), groupSize, $"The group size must be a positive multiple of {StashCodecKernels.GroupMultiple}.");
        if (n < 0 || n > int.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(n), n, "A stash tensor must hold at most 2^31 - 1 values.");
    }

    /// <summary>
    /// Encodes <paramref name="input"/> (n) into <paramref name="encoded"/> (exactly <see cref="EncodedWords"/> words),
    /// with the random stream <paramref name="key"/> (<see cref="StashCodecKernels.StreamKey"/>).
    /// </summary>
    public void Encode(AcceleratorStream s, ArrayView<uint> encoded, ArrayView<float> input, int groupSize, int bits, ulong key,
        StashEncodeLayout layout = StashEncodeLayout.Auto)
    {
        Check.Length(encoded, EncodedWords(input.Length, groupSize, bits), nameof(encoded));
        if (input.Length == 0) return;
        var groups = StashCodecKernels.GroupCount((int)input.Length, groupSize);
        if (layout == StashEncodeLayout.Auto)
            layout = _accelerator.AcceleratorType == AcceleratorType.CPU ? StashEncodeLayout.PerThread : StashEncodeLayout.Cooperative;
        var config = layout == StashEncodeLayout.Cooperative
            ? RowLaunch.Rows(_accelerator, groups, groupSize)
            : Launch.Elementwise(_accelerator, groups);
        _encode(s, config, encoded, input, groupSize, bits, key, layout == StashEncodeLayout.Cooperative ? 1 : 0);
    }

    /// <summary>Decodes <paramref name="encoded"/> (exactly <see cref="EncodedWords"/> words) into <paramref name="output"/> (n).</summary>
    public void Decode(AcceleratorStream s, ArrayView<float> output, ArrayView<uint> encoded, int groupSize, int bits)
    {
        Check.Length(encoded, EncodedWords(output.Length, groupSize, bits), nameof(encoded));
        if (output.Length == 0) return;
        var words = StashCodecKernels.PayloadWords((int)output.Length, bits);
        _decode(s, Launch.Elementwise(_accelerator, words), output, encoded, groupSize, bits);
    }

    /// <summary>
    /// <c>energy[0] = Σ_g n_g · (max_g − min_g)²</c> of an encoded tensor of <paramref name="n"/> values
    /// (<see cref="StashCodecKernels.StashRangeEnergyKernel"/>): one thread group, a fixed order of additions.
    /// </summary>
    public void RangeEnergy(AcceleratorStream s, ArrayView<float> energy, ArrayView<uint> encoded, long n, int groupSize, int bits)
    {
        Check.Length(encoded, EncodedWords(n, groupSize, bits), nameof(encoded));
        Check.AtLeast(energy, 1, nameof(energy));
        _rangeEnergy(s, new KernelConfig(1, Launch.GroupSize(_accelerator)), energy, encoded, (int)n, groupSize, bits);
    }
}
