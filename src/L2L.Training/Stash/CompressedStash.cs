// The relay's compressed stash: packed codes on the device or in pinned host memory, encoded after a layer's
// forward and decoded into a workspace buffer before the backward's recomputation; per-level bits for the adaptive codec.
using ILGPU;
using ILGPU.Runtime;
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.Kernels;

namespace L2L.Training.Stash;

/// <summary>
/// Holds the stashed block inputs of every level and micro-batch as encoded tensors (<see cref="StashCodecOps"/>).
/// With a device placement they are one <c>stash</c> pool of L·U encoded tensors; with a host placement the pool is
/// pinned host memory and they pass through two encoded device slots, so only the encoded words cross the bus.
/// The decode target is one activation in the <c>workspace</c> category. Sizes: <see cref="StashFootprint.Of"/>.
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
    private readonly DeviceBuffer<float> _decoded;
    private readonly DeviceBuffer<float>? _estimates;
    private readonly PinnedHostBuffer<float>? _estimatesHost;
    private readonly AdaptiveBits? _adaptive;
    private readonly ResourceList _owned = new();
    private readonly int[] _bits;
    private readonly long[] _offsets, _words;
    private bool _measuring;
    private int _levelsRun;

    /// <summary>
    /// Allocates the stash for <paramref name="levels"/> × <paramref name="microBatches"/> activations of <paramref name="activationLength"/> floats.
    /// An adaptive codec continues from the choice state in <paramref name="resumed"/> (checkpoint metadata) when it has one.
    /// </summary>
    public CompressedStash(Backend backend, StashCodecSettings settings, StashPlacement placement, int levels, int microBatches, long activationLength,
        IReadOnlyDictionary<string, string>? resumed = null)
    {
        settings.Validate();
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
            _decoded = _owned.Add(backend.Allocate<float>(activationLength, MemoryCategory.Workspace, "stash-decoded"));
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
    /// <paramref name="activationLength"/> floats takes, as the constructor allocates them (sizes from
    /// <see cref="StashFootprint"/>): device buffers in order (32-bit words, the FP32 decode target, the adaptive codec's
    /// estimates) and the pinned host buffers; and the bytes a host placement moves per step (every level's U encoded
    /// inputs out once and back once) at the first step's bits (for the adaptive codec, the equal-weight choice).
    /// </summary>
    public static (IReadOnlyList<BufferSpec> Device, IReadOnlyList<BufferSpec> Host, long StepBusBytes) Describe(StashCodecSettings settings,
        StashPlacement placement, int levels, int microBatches, long activationLength)
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
        device.Add(new("stash-decoded", MemoryCategory.Workspace, activationLength));
        if (estimates > 0)
        {
            device.Add(new("stash-estimates", MemoryCategory.Workspace, estimates));
            host.Add(new("host.stash-estimates", MemoryCategory.Workspace, estimates));
        }
        var bits = settings.IsAdaptive ? new AdaptiveBits(levels, settings.BitsBudget).Current : Enumerable.Repeat(settings.Bits, levels).ToArray();
        var step = bits.Sum(b => 2L * microBatches * StashFootprint.TensorWords(settings, activationLength, b) * sizeof(uint));
        return (device, host, step);
    }

    /// <summary>Floats in one stashed activation.</summary>
    public long ActivationLength { get; }

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
    /// keyed by (seed, step, level, u); on a measuring step also its range energy.
    /// </summary>
    public void Encode(AcceleratorStream s, long step, int level, int u, int slot, ArrayView<float> input)
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
    /// </summary>
    public void ObserveGradient(AcceleratorStream s, int level, int u, ArrayView<float> dY, ArrayView<float> partials)
    {
        if (_measuring)
            _reduce.SumOfSquares(s, Estimate(1, level, u), dY, partials);
    }

    /// <summary>Enqueues the decode of a stashed input into the workspace buffer, which it returns.</summary>
    public ArrayView<float> Decode(AcceleratorStream s, int level, int u, int slot)
    {
        _ops.Decode(s, _decoded.View, Encoded(level, u, slot), _settings.GroupSize, _bits[level]);
        return _decoded.View;
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
