// The relay's compressed stash: packed codes on the device or in pinned host memory, encoded after a layer's
// forward and decoded into a workspace buffer before the backward's recomputation.
using ILGPU;
using ILGPU.Runtime;
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.Kernels;

namespace L2L.Training.Stash;

/// <summary>
/// Holds the stashed block inputs of every level and micro-batch as encoded tensors (<see cref="StashCodecOps"/>).
/// With a device placement they are one <c>stash</c> buffer of L·U encoded tensors; with a host placement they are
/// pinned host memory and pass through two encoded device slots, so only the encoded words cross the bus.
/// The decode target is one activation in the <c>workspace</c> category.
/// </summary>
internal sealed class CompressedStash : IDisposable
{
    private readonly Backend _backend;
    private readonly StashCodecOps _ops;
    private readonly StashCodecSettings _settings;
    private readonly int _microBatches;
    private readonly long _words;
    private readonly DeviceBuffer<uint>? _device;
    private readonly PinnedHostBuffer<uint>? _host;
    private readonly DeviceBuffer<uint>[] _slots = [];
    private readonly DeviceBuffer<float> _decoded;
    private readonly ResourceList _owned = new();

    /// <summary>Allocates the stash for <paramref name="levels"/> × <paramref name="microBatches"/> activations of <paramref name="activationLength"/> floats.</summary>
    public CompressedStash(Backend backend, StashCodecSettings settings, StashPlacement placement, int levels, int microBatches, long activationLength)
    {
        settings.Validate();
        _backend = backend;
        _ops = backend.Get<StashCodecOps>();
        _settings = settings;
        _microBatches = microBatches;
        ActivationLength = activationLength;
        _words = StashCodecOps.EncodedWords(activationLength, settings.GroupSize, settings.Bits);
        try
        {
            if (placement == StashPlacement.Device)
            {
                _device = _owned.Add(backend.Allocate<uint>(levels * (long)microBatches * _words, MemoryCategory.Stash, "stash.packed"));
            }
            else
            {
                _host = _owned.Add(backend.AllocatePinned<uint>(levels * (long)microBatches * _words));
                _slots = [_owned.Add(backend.Allocate<uint>(_words, MemoryCategory.Stash, "stash-packed.0")), _owned.Add(backend.Allocate<uint>(_words, MemoryCategory.Stash, "stash-packed.1"))];
            }
            _decoded = _owned.Add(backend.Allocate<float>(activationLength, MemoryCategory.Workspace, "stash-decoded"));
        }
        catch
        {
            _owned.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The buffers a stash of <paramref name="levels"/> × <paramref name="microBatches"/> activations of
    /// <paramref name="activationLength"/> floats takes, as the constructor allocates them: device buffers in order
    /// (32-bit words, then the FP32 decode target) and the pinned host buffer of a host placement; and the bytes of one
    /// encoded activation, what a host placement moves per store or fetch.
    /// </summary>
    public static (IReadOnlyList<BufferSpec> Device, IReadOnlyList<BufferSpec> Host, long EncodedBytes) Describe(StashCodecSettings settings,
        StashPlacement placement, int levels, int microBatches, long activationLength)
    {
        var words = StashCodecOps.EncodedWords(activationLength, settings.GroupSize, settings.Bits);
        var all = levels * (long)microBatches * words;
        IReadOnlyList<BufferSpec> device = placement == StashPlacement.Device
            ? [new("stash.packed", MemoryCategory.Stash, all), new("stash-decoded", MemoryCategory.Workspace, activationLength)]
            : [new("stash-packed.0", MemoryCategory.Stash, words), new("stash-packed.1", MemoryCategory.Stash, words), new("stash-decoded", MemoryCategory.Workspace, activationLength)];
        IReadOnlyList<BufferSpec> host = placement == StashPlacement.Device ? [] : [new("host.stash.packed", MemoryCategory.Stash, all)];
        return (device, host, words * sizeof(uint));
    }

    /// <summary>Floats in one stashed activation.</summary>
    public long ActivationLength { get; }

    /// <summary>Bytes of one encoded activation (what crosses the bus per store or fetch with a host placement).</summary>
    public long EncodedBytes => _words * sizeof(uint);

    private ArrayView<uint> Encoded(int level, int u, int slot) =>
        _device is not null ? _device.Slice((level * (long)_microBatches + u) * _words, _words) : _slots[slot].View;

    private long HostOffset(int level, int u) => (level * (long)_microBatches + u) * _words;

    /// <summary>Enqueues the encode of <paramref name="input"/>, the stashed input of level <paramref name="level"/> for micro-batch <paramref name="u"/>, keyed by (seed, step, level, u).</summary>
    public void Encode(AcceleratorStream s, long step, int level, int u, int slot, ArrayView<float> input)
    {
        var key = StashCodecKernels.StreamKey(_settings.Seed, step, level, u);
        _ops.Encode(s, Encoded(level, u, slot), input, _settings.GroupSize, _settings.Bits, key);
    }

    /// <summary>Enqueues the decode of a stashed input into the workspace buffer, which it returns.</summary>
    public ArrayView<float> Decode(AcceleratorStream s, int level, int u, int slot)
    {
        _ops.Decode(s, _decoded.View, Encoded(level, u, slot), _settings.GroupSize, _settings.Bits);
        return _decoded.View;
    }

    /// <summary>Host placement: enqueues the copy of slot <paramref name="slot"/> out to the host; returns the bytes moved.</summary>
    public long Store(AcceleratorStream copy, int level, int u, int slot)
    {
        _host!.CopyFromDeviceAsync(copy, _slots[slot].View, HostOffset(level, u), _words);
        return EncodedBytes;
    }

    /// <summary>Host placement: enqueues the copy of a stashed input from the host into slot <paramref name="slot"/>; returns the bytes moved.</summary>
    public long Fetch(AcceleratorStream copy, int level, int u, int slot)
    {
        _host!.CopyToDeviceAsync(copy, _slots[slot].View, HostOffset(level, u), _words);
        return EncodedBytes;
    }

    /// <inheritdoc/>
    public void Dispose() => _owned.Dispose();
}
