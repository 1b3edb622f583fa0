// Launchers for the stash codec: encode FP32, BF16 or FP16 activations to packed 8/4/2-bit codes with per-group
// ranges, and decode back into the same storage type.
using ILGPU;
using ILGPU.Runtime;
using L2L.Kernels;
using Half = ILGPU.Half;

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

/// <summary>
/// The stash codec's kernels, loaded once per accelerator; sizes follow <see cref="StashCodecKernels"/>' layout.
/// <see cref="Encode{T}"/> and <see cref="Decode{T}"/> also take <see cref="Bf16"/> and <see cref="Half"/> activations
/// (kernels loaded on first use): the same packed format, the codes those of the FP32 encode of the widened values.
/// </summary>
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
        _bf16 = new(() => new Typed<Bf16, Bf16Storage>(_accelerator));
        _fp16 = new(() => new Typed<Half, Fp16Storage>(_accelerator));
    }

    private readonly Lazy<Typed<Bf16, Bf16Storage>> _bf16;
    private readonly Lazy<Typed<Half, Fp16Storage>> _fp16;

    private sealed class Typed<T, S> where T : unmanaged where S : struct, IStorage<T>
    {
        public readonly Action<AcceleratorStream, KernelConfig, ArrayView<uint>, ArrayView<T>, int, int, ulong, int> Encode;
        public readonly Action<AcceleratorStream, KernelConfig, ArrayView<T>, ArrayView<uint>, int, int> Decode;

        public Typed(Accelerator a)
        {
            Encode = a.LoadKernel<ArrayView<uint>, ArrayView<T>, int, int, ulong, int>(StashCodecKernels.StashEncodeGenericKernel<T, S>);
            Decode = a.LoadKernel<ArrayView<T>, ArrayView<uint>, int, int>(StashCodecKernels.StashDecodeGenericKernel<T, S>);
        }
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
        StashEncodeLayout layout = StashEncodeLayout.Auto) =>
        EncodeWith(_encode, s, encoded, input, groupSize, bits, key, layout);

    /// <summary>
    /// Encodes an activation stored as <typeparamref name="T"/> (<see cref="float"/>, <see cref="Bf16"/> or <see cref="Half"/>):
    /// each value widened to FP32, then as the FP32 overload, so the words equal the FP32 encode of the widened values.
    /// </summary>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not one of the storage types.</exception>
    public void Encode<T>(AcceleratorStream s, ArrayView<uint> encoded, ArrayView<T> input, int groupSize, int bits, ulong key,
        StashEncodeLayout layout = StashEncodeLayout.Auto) where T : unmanaged
    {
        if (typeof(T) == typeof(float)) EncodeWith(_encode, s, encoded, input.Cast<float>(), groupSize, bits, key, layout);
        else if (typeof(T) == typeof(Bf16)) EncodeWith(_bf16.Value.Encode, s, encoded, input.Cast<Bf16>(), groupSize, bits, key, layout);
        else if (typeof(T) == typeof(Half)) EncodeWith(_fp16.Value.Encode, s, encoded, input.Cast<Half>(), groupSize, bits, key, layout);
        else throw Unsupported<T>();
    }

    /// <summary>Decodes <paramref name="encoded"/> (exactly <see cref="EncodedWords"/> words) into <paramref name="output"/> (n).</summary>
    public void Decode(AcceleratorStream s, ArrayView<float> output, ArrayView<uint> encoded, int groupSize, int bits) =>
        DecodeWith(_decode, s, output, encoded, groupSize, bits);

    /// <summary>
    /// Decodes into an activation stored as <typeparamref name="T"/> (<see cref="float"/>, <see cref="Bf16"/> or <see cref="Half"/>):
    /// each value computed in FP32 as the FP32 overload does, then rounded to nearest even into <typeparamref name="T"/>.
    /// </summary>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not one of the storage types.</exception>
    public void Decode<T>(AcceleratorStream s, ArrayView<T> output, ArrayView<uint> encoded, int groupSize, int bits) where T : unmanaged
    {
        if (typeof(T) == typeof(float)) DecodeWith(_decode, s, output.Cast<float>(), encoded, groupSize, bits);
        else if (typeof(T) == typeof(Bf16)) DecodeWith(_bf16.Value.Decode, s, output.Cast<Bf16>(), encoded, groupSize, bits);
        else if (typeof(T) == typeof(Half)) DecodeWith(_fp16.Value.Decode, s, output.Cast<Half>(), encoded, groupSize, bits);
        else throw Unsupported<T>();
    }

    private void EncodeWith<T>(Action<AcceleratorStream, KernelConfig, ArrayView<uint>, ArrayView<T>, int, int, ulong, int> kernel, AcceleratorStream s,
        ArrayView<uint> encoded, ArrayView<T> input, int groupSize, int bits, ulong key, StashEncodeLayout layout) where T : unmanaged
    {
        Check.Length(encoded, EncodedWords(input.Length, groupSize, bits), nameof(encoded));
        if (input.Length == 0) return;
        var groups = StashCodecKernels.GroupCount((int)input.Length, groupSize);
        if (layout == StashEncodeLayout.Auto)
            layout = _accelerator.AcceleratorType == AcceleratorType.CPU ? StashEncodeLayout.PerThread : StashEncodeLayout.Cooperative;
        var config = layout == StashEncodeLayout.Cooperative
            ? RowLaunch.Rows(_accelerator, groups, groupSize)
            : Launch.Elementwise(_accelerator, groups);
        kernel(s, config, encoded, input, groupSize, bits, key, layout == StashEncodeLayout.Cooperative ? 1 : 0);
    }

    private void DecodeWith<T>(Action<AcceleratorStream, KernelConfig, ArrayView<T>, ArrayView<uint>, int, int> kernel, AcceleratorStream s,
        ArrayView<T> output, ArrayView<uint> encoded, int groupSize, int bits) where T : unmanaged
    {
        Check.Length(encoded, EncodedWords(output.Length, groupSize, bits), nameof(encoded));
        if (output.Length == 0) return;
        var words = StashCodecKernels.PayloadWords((int)output.Length, bits);
        kernel(s, Launch.Elementwise(_accelerator, words), output, encoded, groupSize, bits);
    }

    private static NotSupportedException Unsupported<T>() =>
        new($"The stash codec stores float, Bf16 or Half activations, not {typeof(T).Name}.");

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
