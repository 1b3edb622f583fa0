// Page-locked host memory for asynchronous copies between host and device, of any length (past 2^31 elements too).
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;

namespace L2L.Backends;

/// <summary>
/// Pinned native host memory registered with the accelerator as page-locked, so copies to and from the device can
/// run asynchronously on a stream. The memory stays valid (and must not be written by the host) until the stream
/// that copies it has been synchronized. Lengths and offsets are 64-bit: a buffer may hold more than 2^31 elements
/// (a host activation stash of a large model does). A span cannot, so <see cref="Span"/> is for buffers of at most
/// <see cref="int.MaxValue"/> elements, and <see cref="Slice"/> pages through larger ones.
/// </summary>
/// <typeparam name="T">Element type.</typeparam>
public sealed unsafe class PinnedHostBuffer<T> : IDisposable where T : unmanaged
{
    // Page alignment: what page-locking registers anyway, and what DMA engines like.
    private const int Alignment = 4096;
    private T* _pointer;
    private PageLockScope<T>? _scope;
    private readonly MemoryTracker? _tracker;

    /// <summary>Allocates <paramref name="length"/> pinned, page-locked elements, zeroed.</summary>
    public PinnedHostBuffer(Accelerator accelerator, long length) : this(accelerator, length, null)
    {
    }

    /// <summary>Allocates like the public constructor, counting the bytes in <paramref name="tracker"/>'s pinned host total.</summary>
    internal PinnedHostBuffer(Accelerator accelerator, long length, MemoryTracker? tracker)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        Length = length;
        var elements = Math.Max(length, 1);
        var bytes = checked((nuint)elements * (nuint)sizeof(T));
        try
        {
            _pointer = (T*)NativeMemory.AlignedAlloc(bytes, Alignment);
        }
        catch (OutOfMemoryException)
        {
            throw new OutOfMemoryException($"Could not allocate {bytes} bytes of pinned host memory ({length} elements of {typeof(T).Name}); reduce the batch or use fewer micro-batches.");
        }
        NativeMemory.Clear(_pointer, bytes);
        try
        {
            _scope = accelerator.CreatePageLockFromPinned<T>((IntPtr)_pointer, elements);
        }
        catch (NotSupportedException)
        {
            _scope = null; // pinned but not page-locked (some OpenCL drivers); copies are then synchronous
        }
        catch
        {
            NativeMemory.AlignedFree(_pointer);
            _pointer = null;
            throw;
        }
        _tracker = tracker;
        _tracker?.TrackPinned((long)length * sizeof(T));
    }

    /// <summary>Number of elements.</summary>
    public long Length { get; }

    /// <summary>The elements as one span; only for buffers of at most <see cref="int.MaxValue"/> elements (use <see cref="Slice"/> past that).</summary>
    public Span<T> Span
    {
        get
        {
            if (Length > int.MaxValue)
                throw new InvalidOperationException($"A pinned buffer of {Length} elements does not fit one span; page through it with Slice(offset, length).");
            return new Span<T>(Live(), (int)Length);
        }
    }

    /// <summary>The <paramref name="length"/> elements at <paramref name="offset"/> (64-bit) as a span.</summary>
    public Span<T> Slice(long offset, int length)
    {
        CheckRange(offset, length);
        return new Span<T>(Live() + offset, length);
    }

    /// <summary>The element at <paramref name="index"/> (64-bit).</summary>
    public ref T this[long index]
    {
        get
        {
            if ((ulong)index >= (ulong)Length)
                throw new ArgumentOutOfRangeException(nameof(index), $"Index {index} is outside a pinned buffer of {Length} elements.");
            return ref Live()[index];
        }
    }

    /// <summary>Sets every element to <paramref name="value"/>, a span-sized chunk at a time.</summary>
    public void Fill(T value)
    {
        for (long offset = 0; offset < Length; offset += ChunkLength)
            Slice(offset, (int)Math.Min(ChunkLength, Length - offset)).Fill(value);
    }

    /// <summary>The longest chunk <see cref="Fill"/> and callers paging with <see cref="Slice"/> need: 2^30 elements.</summary>
    public const int ChunkLength = 1 << 30;

    /// <summary>Enqueues a copy of <paramref name="count"/> elements from this buffer at <paramref name="offset"/> to <paramref name="target"/>.</summary>
    public void CopyToDeviceAsync(AcceleratorStream stream, ArrayView<T> target, long offset = 0, long count = -1)
    {
        if (count < 0) count = target.Length;
        Check(offset, count, target.Length);
        if (count == 0) return;
        target.SubView(0, count).CopyFromCPUUnsafeAsync(stream, ref Unsafe.AsRef<T>(Live() + offset), count);
    }

    /// <summary>Enqueues a copy of <paramref name="count"/> elements from <paramref name="source"/> into this buffer at <paramref name="offset"/>.</summary>
    public void CopyFromDeviceAsync(AcceleratorStream stream, ArrayView<T> source, long offset = 0, long count = -1)
    {
        if (count < 0) count = source.Length;
        Check(offset, count, source.Length);
        if (count == 0) return;
        source.SubView(0, count).CopyToCPUUnsafeAsync(stream, ref Unsafe.AsRef<T>(Live() + offset), count);
    }

    private T* Live()
    {
        ObjectDisposedException.ThrowIf(_pointer == null, this);
        return _pointer;
    }

    private void CheckRange(long offset, long count)
    {
        if (offset < 0 || count < 0 || offset > Length - count)
            throw new ArgumentOutOfRangeException(nameof(offset), $"The range of {count} elements at {offset} is outside a pinned buffer of {Length}.");
    }

    private void Check(long offset, long count, long viewLength)
    {
        if (offset < 0 || count > viewLength || offset > Length - count)
            throw new ArgumentOutOfRangeException(nameof(offset), $"Copy of {count} elements at {offset} does not fit a pinned buffer of {Length} (view {viewLength}).");
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        Interlocked.Exchange(ref _scope, null)?.Dispose();
        var pointer = _pointer;
        _pointer = null;
        if (pointer != null)
        {
            NativeMemory.AlignedFree(pointer);
            _tracker?.TrackPinned(-(long)Length * sizeof(T));
        }
    }
}
