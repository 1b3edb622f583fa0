// The relay's compressed stash: packed codes on the device or in pinned host memory, encoded after a layer's
// forward and decoded into a workspace buffer (in the run's precision) before the backward's recomputation;
// per-level bits for the adaptive codec.
using ILGPU;
using ILGPU.Runtime;
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.Kernels;
using Half = ILGPU.Half;

namespace L2L.Training.Stash;

/// <summary>
/// Holds the stashed block inputs of every level and micro-batch as encoded tensors (<see cref="StashCodecOps"/>).
/// With a device placement they are one <c>stash</c> pool of L·U encoded tensors; with a host placement the pool is
/// pinned host memory and they pass through two encoded device slots, so only the encoded words cross the bus.
/// The decode target is one activation in the <c>workspace</c> category, stored in the run's <see cref="Precision"/>
/// (FP32, or 2-byte BF16 / FP16 elements); the encoded words are the same in every precision. Sizes: <see cref="StashFootprint.Of"/>.
/// </summary>
/// <remarks>
/// Level l's U tensors lie together in the pool at an offset that follows from the bits of the levels below, set at
/// <see cref="BeginStep"/>. The adaptive codec (<see cref="AdaptiveBits"/>) measures on steps that are multiples of
/// K: after each encode the tensor's range energy, before each block's backward the square of the gradient arriving
/// at its output, both into a device buffer; at <see cref="EndStep"/> they come to the host and the next steps' bits
/// are chosen. Every other step runs no extra kernel and no extra copy.
/// </remarks>
internal sealed class CompressedStash : IDisposable
{
    private readonly StashCodecOps _ops;
    private readonly ReduceOps _reduce;
    private readonly StashCodecSettings _settings;
    private readonly int _levels, _microBatches;
    private readonly DeviceBuffer<uint>? _device;
    private readonly PinnedHostBuffer<uint>? _host;
    private readonly DeviceBuffer<uint>[] _slots = [];
    private readonly IDisposable _decoded; // a DeviceBuffer of the precision's storage type
    private readonly DeviceBuffer<float>? _estimates;
    private readonly PinnedHostBuffer<float>? _estimatesHost;
    private readonly AdaptiveBits? _adaptive;
    private readonly ResourceList _owned = new();
    private readonly int[] _bits;
    private readonly long[] _offsets, _words;
    private bool _measuring;
    private int _levelsRun;

    /// <summary>
    /// Allocates the stash for <paramref name="levels"/> × <paramref name="microBatches"/> activations of <paramref name="activationLength"/> values.
    /// An adaptive codec continues from the choice state in <paramref name="resumed"/> (checkpoint metadata) when it has one.
    /// <paramref name="precision"/> is the activations' storage: the type <see cref="Decode{T}"/> writes.
    /// </summary>
    public CompressedStash(Backend backend, StashCodecSettings settings, StashPlacement placement, int levels, int microBatches, long activationLength,
        IReadOnlyDictionary<string, string>? resumed = null, Precision precision = Precision.Fp32)
    {
        settings.Validate();
        Precision = precision;
        _ops = backend.Get<StashCodecOps>();
        _reduce = backend.Get<ReduceOps>();
        _settings = settings;
        _levels = levels;
        _microBatches = microBatches;
        ActivationLength = activationLength;
        _bits = new int[levels];
        _offsets = new long[levels];
        _words = new long[levels];
        if (settings.IsAdaptive)
        {
            _adaptive = new AdaptiveBits(levels, settings.BitsBudget);
            if (resumed is not null) _adaptive.Load(resumed);
        }
        SetBits(_adaptive?.Current);
        try
        {
            var pool = StashFootprint.PoolWords(settings, levels, microBatches, activationLength);
            if (placement == StashPlacement.Device)
            {
                _device = _owned.Add(backend.Allocate<uint>(pool, MemoryCategory.Stash, "stash.packed"));
            }
            else
            {
                var slot = StashFootprint.SlotWords(settings, levels, activationLength);
                _host = _owned.Add(backend.AllocatePinned<uint>(pool));
                _slots = [_owned.Add(backend.Allocate<uint>(slot, MemoryCategory.Stash, "stash-packed.0")), _owned.Add(backend.Allocate<uint>(slot, MemoryCategory.Stash, "stash-packed.1"))];
            }
            _decoded = precision switch
            {
                Precision.Fp32 => _owned.Add(backend.Allocate<float>(activationLength, MemoryCategory.Workspace, DecodedName)),
                Precision.Bf16 => _owned.Add(backend.Allocate<Bf16>(activationLength, MemoryCategory.Workspace, DecodedName)),
                Precision.Fp16 => _owned.Add(backend.Allocate<Half>(activationLength, MemoryCategory.Workspace, DecodedName)),
                _ => throw new ArgumentOutOfRangeException(nameof(precision), precision, "The stash stores fp32, bf16 or fp16 activations."),
            };
            var estimates = StashFootprint.EstimateFloats(settings, levels, microBatches);
            if (estimates > 0)
            {
                _estimates = _owned.Add(backend.Allocate<float>(estimates, MemoryCategory.Workspace, "stash-estimates"));
                _estimatesHost = _owned.Add(backend.AllocatePinned<float>(estimates));
            }
        }
        catch
        {
            _owned.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The buffers a stash of <paramref name="levels"/> × <paramref name="microBatches"/> activations of
    /// <paramref name="activationLength"/> values takes, as the constructor allocates them (sizes from
    /// <see cref="StashFootprint"/>): device buffers in order (32-bit words, the decode target in <paramref name="precision"/>'s
    /// element size, the adaptive codec's FP32 estimates) and the pinned host buffers; and the bytes a host placement moves
    /// per step (every level's U encoded inputs out once and back once) at the first step's bits (for the adaptive codec,
    /// the equal-weight choice). Only the decode target depends on the precision.
    /// </summary>
    public static (IReadOnlyList<BufferSpec> Device, IReadOnlyList<BufferSpec> Host, long StepBusBytes) Describe(StashCodecSettings settings,
        StashPlacement placement, int levels, int microBatches, long activationLength, Precision precision = Precision.Fp32)
    {
        var pool = StashFootprint.PoolWords(settings, levels, microBatches, activationLength);
        var estimates = StashFootprint.EstimateFloats(settings, levels, microBatches);
        var device = new List<BufferSpec>();
        var host = new List<BufferSpec>();
        if (placement == StashPlacement.Device)
        {
            device.Add(new("stash.packed", MemoryCategory.Stash, pool, sizeof(uint)));
        }
        else
        {
            var slot = StashFootprint.SlotWords(settings, levels, activationLength);
            host.Add(new("host.stash.packed", MemoryCategory.Stash, pool, sizeof(uint)));
            device.Add(new("stash-packed.0", MemoryCategory.Stash, slot, sizeof(uint)));
            device.Add(new("stash-packed.1", MemoryCategory.Stash, slot, sizeof(uint)));
        }
        device.Add(new(DecodedName, MemoryCategory.Workspace, activationLength, precision.ElementSize()));
        if (estimates > 0)
        {
            device.Add(new("stash-estimates", MemoryCategory.Workspace, estimates));
            host.Add(new("host.stash-estimates", MemoryCategory.Workspace, estimates));
        }
        var bits = settings.IsAdaptive ? new AdaptiveBits(levels, settings.BitsBudget).Current : Enumerable.Repeat(settings.Bits, levels).ToArray();
        var step = bits.Sum(b => 2L * microBatches * StashFootprint.TensorWords(settings, activationLength, b) * sizeof(uint));
        return (device, host, step);
    }

    private const string DecodedName = "stash-decoded";

    /// <summary>Values in one stashed activation.</summary>
    public long ActivationLength { get; }

    /// <summary>How the activations are stored: the element type of <see cref="Decode{T}"/>'s workspace.</summary>
    public Precision Precision { get; }

    /// <summary>The bits of the levels stashed in the current step (those that ran), a fresh array.</summary>
    public int[] StepBits => _bits[.._levelsRun];

    /// <summary>Bytes of one encoded activation of level <paramref name="level"/> in the current step (what crosses the bus per store or fetch with a host placement).</summary>
    public long EncodedBytes(int level) => _words[level] * sizeof(uint);

    // Level l's bits, words per tensor and pool offset (its U tensors follow those of the levels below).
    private void SetBits(int[]? bits)
    {
        long offset = 0;
        for (var l = 0; l < _levels; l++)
        {
            _bits[l] = bits?[l] ?? _settings.Bits;
            _words[l] = StashFootprint.TensorWords(_settings, ActivationLength, _bits[l]);
            _offsets[l] = offset;
            offset += _microBatches * _words[l];
        }
    }

    /// <summary>
    /// Starts step <paramref name="step"/>, which stashes <paramref name="levelsRun"/> levels: fixes the bits for the step
    /// and, on a measuring step of the adaptive codec (a multiple of K), clears the estimates on <paramref name="s"/>.
    /// </summary>
    public void BeginStep(AcceleratorStream s, long step, int levelsRun)
    {
        _levelsRun = levelsRun;
        if (_adaptive is null) return;
        SetBits(_adaptive.Current);
        _measuring = step % _settings.AdaptEvery == 0;
        if (_measuring) _estimates!.View.MemSetToZero(s);
    }

    /// <summary>
    /// Ends the step: on a measuring step brings the estimates to the host (synchronizing <paramref name="s"/>) and
    /// chooses the bits of the following steps.
    /// </summary>
    public void EndStep(AcceleratorStream s)
    {
        if (!_measuring) return;
        _measuring = false;
        _estimatesHost!.CopyFromDeviceAsync(s, _estimates!.View);
        s.Synchronize();
        var all = _estimatesHost.Span;
        var half = _levels * _microBatches;
        _adaptive!.Update(all[..half], all[half..], _microBatches, _levelsRun);
    }

    /// <summary>Writes the adaptive codec's choice state into checkpoint metadata (nothing for a fixed width).</summary>
    public void SaveState(IDictionary<string, string> metadata) => _adaptive?.Save(metadata);

    private ArrayView<uint> Encoded(int level, int u, int slot) =>
        _device is not null ? _device.Slice(HostOffset(level, u), _words[level]) : _slots[slot].View.SubView(0, _words[level]);

    private long HostOffset(int level, int u) => _offsets[level] + u * _words[level];

    private ArrayView<float> Estimate(int part, int level, int u) => _estimates!.View.SubView(part * (long)_levels * _microBatches + level * (long)_microBatches + u, 1);

    /// <summary>
    /// Enqueues the encode of <paramref name="input"/>, the stashed input of level <paramref name="level"/> for micro-batch <paramref name="u"/>,
    /// keyed by (seed, step, level, u); on a measuring step also its range energy. <typeparamref name="T"/> is float, <see cref="Bf16"/>
    /// or <see cref="Half"/>; a 16-bit input gives the words an FP32 input of the widened values would.
    /// </summary>
    public void Encode<T>(AcceleratorStream s, long step, int level, int u, int slot, ArrayView<T> input) where T : unmanaged
    {
        var key = StashCodecKernels.StreamKey(_settings.Seed, step, level, u);
        var encoded = Encoded(level, u, slot);
        _ops.Encode(s, encoded, input, _settings.GroupSize, _bits[level], key);
        if (_measuring)
            _ops.RangeEnergy(s, Estimate(0, level, u), encoded, input.Length, _settings.GroupSize, _bits[level]);
    }

    /// <summary>
    /// On a measuring step, enqueues ‖<paramref name="dY"/>‖², the gradient arriving at the output of the block whose input is level
    /// <paramref name="level"/>, for micro-batch <paramref name="u"/> (<paramref name="partials"/>: <see cref="ReduceOps"/> scratch).
    /// A 16-bit <paramref name="dY"/> (<see cref="Bf16"/>, <see cref="Half"/>) is widened and summed in FP32, in the FP32 order of additions.
    /// </summary>
    public void ObserveGradient<T>(AcceleratorStream s, int level, int u, ArrayView<T> dY, ArrayView<float> partials) where T : unmanaged
    {
        if (!_measuring) return;
        var estimate = Estimate(1, level, u);
        if (typeof(T) == typeof(float)) _reduce.SumOfSquares(s, estimate, dY.Cast<float>(), partials);
        else if (typeof(T) == typeof(Bf16)) _reduce.SumOfSquares(s, estimate, dY.Cast<Bf16>(), partials);
        else if (typeof(T) == typeof(Half)) _reduce.SumOfSquares(s, estimate, dY.Cast<Half>(), partials);
        else throw new NotSupportedException($"A boundary gradient is float, Bf16 or Half, not {typeof(T).Name}.");
    }

    /// <summary>
    /// Enqueues the decode of a stashed input into the workspace buffer, which it returns. <typeparamref name="T"/> must be
    /// <see cref="Precision"/>'s storage type.
    /// </summary>
    /// <exception cref="ArgumentException"><typeparamref name="T"/> is not the storage type of <see cref="Precision"/>.</exception>
    public ArrayView<T> Decode<T>(AcceleratorStream s, int level, int u, int slot) where T : unmanaged
    {
        if (_decoded is not DeviceBuffer<T> decoded)
            throw new ArgumentException($"The stash decodes {Precision.Name()} activations ({Precision.StorageType().Name}), not {typeof(T).Name}.");
        _ops.Decode(s, decoded.View, Encoded(level, u, slot), _settings.GroupSize, _bits[level]);
        return decoded.View;
    }

    /// <summary>Host placement: enqueues the copy of slot <paramref name="slot"/> out to the host; returns the bytes moved.</summary>
    public long Store(AcceleratorStream copy, int level, int u, int slot)
    {
        _host!.CopyFromDeviceAsync(copy, Encoded(level, u, slot), HostOffset(level, u), _words[level]);
        return EncodedBytes(level);
    }

    /// <summary>Host placement: enqueues the copy of a stashed input from the host into slot <paramref name="slot"/>; returns the bytes moved.</summary>
    public long Fetch(AcceleratorStream copy, int level, int u, int slot)
    {
        _host!.CopyToDeviceAsync(copy, Encoded(level, u, slot), HostOffset(level, u), _words[level]);
        return EncodedBytes(level);
    }

    /// <inheritdoc/>
    public void Dispose() => _owned.Dispose();
}
