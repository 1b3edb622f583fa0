// Page-locked host memory for asynchronous copies between host and device.
using ILGPU;
using ILGPU.Runtime;

namespace L2L.Backends;

/// <summary>
/// A pinned managed array registered with the accelerator as page-locked memory, so copies to and
/// from the device can run asynchronously on a stream. The array stays valid (and must not be
/// written by the host) until the stream that copies it has been synchronized.
/// </summary>
/// <typeparam name="T">Element type.</typeparam>
public sealed class PinnedHostBuffer<T> : IDisposable where T : unmanaged
{
    private readonly T[] _array;
    private PageLockScope<T>? _scope;

    /// <summary>Allocates <paramref name="length"/> pinned, page-locked elements.</summary>
    public PinnedHostBuffer(Accelerator accelerator, long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        _array = GC.AllocateArray<T>(checked((int)Math.Max(length, 1)), pinned: true);
        Length = length;
        try
        {
            _scope = accelerator.CreatePageLockFromPinned(_array);
        }
        catch (NotSupportedException)
        {
            _scope = null; // pinned but not page-locked (some OpenCL drivers); copies are then synchronous
        }
    }

    /// <summary>Number of elements.</summary>
    public long Length { get; }

    /// <summary>The host-side array (pinned; its length may exceed <see cref="Length"/> by one for empty buffers).</summary>
    public T[] Array => _array;

    /// <summary>The elements as a span.</summary>
    public Span<T> Span => _array.AsSpan(0, (int)Length);

    /// <summary>Enqueues a copy of <paramref name="count"/> elements from this buffer at <paramref name="offset"/> to <paramref name="target"/>.</summary>
    public void CopyToDeviceAsync(AcceleratorStream stream, ArrayView<T> target, long offset = 0, long count = -1)
    {
        if (count < 0) count = target.Length;
        Check(offset, count, target.Length);
        if (count == 0) return;
        target.SubView(0, count).CopyFromCPUUnsafeAsync(stream, ref _array[offset], count);
    }

    /// <summary>Enqueues a copy of <paramref name="count"/> elements from <paramref name="source"/> into this buffer at <paramref name="offset"/>.</summary>
    public void CopyFromDeviceAsync(AcceleratorStream stream, ArrayView<T> source, long offset = 0, long count = -1)
    {
        if (count < 0) count = source.Length;
        Check(offset, count, source.Length);
        if (count == 0) return;
        source.SubView(0, count).CopyToCPUUnsafeAsync(stream, ref _array[offset], count);
    }

    private void Check(long offset, long count, long viewLength)
    {
        if (offset < 0 || count > viewLength || offset + count > Length)
            throw new ArgumentOutOfRangeException(nameof(offset), $"Copy of {count} elements at {offset} does not fit a pinned buffer of {Length} (view {viewLength}).");
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        Interlocked.Exchange(ref _scope, null)?.Dispose();
    }
}
