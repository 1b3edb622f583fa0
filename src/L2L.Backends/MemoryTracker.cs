// Every device allocation goes through this tracker, which knows what each byte is for.
using ILGPU;
using ILGPU.Runtime;

namespace L2L.Backends;

/// <summary>What a device allocation holds. The planner predicts bytes per category; the tracker measures them.</summary>
public enum MemoryCategory
{
    /// <summary>Layer weights resident on the device.</summary>
    Params,
    /// <summary>Parameter gradients on the device.</summary>
    Grads,
    /// <summary>Activations and scratch for the micro-batch being computed.</summary>
    Workspace,
    /// <summary>Stashed layer inputs kept for the backward pass.</summary>
    Stash,
    /// <summary>Gradients with respect to layer inputs, carried between layers.</summary>
    BoundaryGrads,
    /// <summary>Optimizer state resident on the device (conventional executor only).</summary>
    Optimizer,
    /// <summary>Anything else.</summary>
    Other,
}

/// <summary>Thrown when a device allocation does not fit; the message says what was in use and what to try.</summary>
public sealed class DeviceOutOfMemoryException : Exception
{
    /// <summary>Creates the exception.</summary>
    public DeviceOutOfMemoryException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>
/// Makes and accounts every device allocation. Reports current and peak bytes per
/// <see cref="MemoryCategory"/> and in total, and counts allocations so callers can prove that
/// none happen after warm-up. An optional byte budget makes allocations beyond it fail as if the
/// device were that small.
/// </summary>
public sealed class MemoryTracker
{
    private static readonly int CategoryCount = Enum.GetValues<MemoryCategory>().Length;
    private readonly Accelerator _accelerator;
    private readonly long[] _current = new long[CategoryCount];
    private readonly long[] _peak = new long[CategoryCount];
    private readonly object _gate = new();
    private long _currentTotal;
    private long _peakTotal;
    private long _allocationCount;
    private long _pinnedCurrent;
    private long _pinnedPeak;

    /// <summary>Creates a tracker for <paramref name="accelerator"/>.</summary>
    public MemoryTracker(Accelerator accelerator, long? budgetBytes = null)
    {
        _accelerator = accelerator;
        BudgetBytes = budgetBytes;
    }

    /// <summary>An optional cap on total tracked bytes; null means the device's own limit.</summary>
    public long? BudgetBytes { get; set; }

    /// <summary>Number of allocations made so far.</summary>
    public long AllocationCount { get { lock (_gate) return _allocationCount; } }

    /// <summary>Bytes allocated now, all categories.</summary>
    public long CurrentBytes { get { lock (_gate) return _currentTotal; } }

    /// <summary>The largest <see cref="CurrentBytes"/> seen since creation or <see cref="ResetPeak"/>.</summary>
    public long PeakBytes { get { lock (_gate) return _peakTotal; } }

    /// <summary>Bytes allocated now in one category.</summary>
    public long Current(MemoryCategory category) { lock (_gate) return _current[(int)category]; }

    /// <summary>Peak bytes in one category.</summary>
    public long Peak(MemoryCategory category) { lock (_gate) return _peak[(int)category]; }

    /// <summary>Peak bytes per category, keyed by the category's kebab-case name (e.g. <c>boundary-grads</c>).</summary>
    public IReadOnlyDictionary<string, long> PeakByCategory()
    {
        lock (_gate)
        {
            var result = new SortedDictionary<string, long>(StringComparer.Ordinal);
            foreach (var c in Enum.GetValues<MemoryCategory>())
                result[CategoryName(c)] = _peak[(int)c];
            return result;
        }
    }

    /// <summary>Current bytes per category, keyed like <see cref="PeakByCategory"/>.</summary>
    public IReadOnlyDictionary<string, long> CurrentByCategory()
    {
        lock (_gate)
        {
            var result = new SortedDictionary<string, long>(StringComparer.Ordinal);
            foreach (var c in Enum.GetValues<MemoryCategory>())
                result[CategoryName(c)] = _current[(int)c];
            return result;
        }
    }

    /// <summary>Bytes of pinned host memory allocated through <see cref="Backend.AllocatePinned{T}"/> and not yet released.</summary>
    public long PinnedHostBytes { get { lock (_gate) return _pinnedCurrent; } }

    /// <summary>The largest <see cref="PinnedHostBytes"/> seen since creation or <see cref="ResetPeak"/>.</summary>
    public long PinnedHostPeakBytes { get { lock (_gate) return _pinnedPeak; } }

    internal void TrackPinned(long bytes)
    {
        lock (_gate)
        {
            _pinnedCurrent += bytes;
            _pinnedPeak = Math.Max(_pinnedPeak, _pinnedCurrent);
        }
    }

    /// <summary>Sets every peak (device and pinned host) to the current value.</summary>
    public void ResetPeak()
    {
        lock (_gate)
        {
            _pinnedPeak = _pinnedCurrent;
            Array.Copy(_current, _peak, CategoryCount);
            _peakTotal = _currentTotal;
        }
    }

    /// <summary>The kebab-case name used in metrics and reports.</summary>
    public static string CategoryName(MemoryCategory category) => category switch
    {
        MemoryCategory.BoundaryGrads => "boundary-grads",
        _ => category.ToString().ToLowerInvariant(),
    };

    /// <summary>Allocates <paramref name="length"/> elements of <typeparamref name="T"/> on the device.</summary>
    /// <exception cref="DeviceOutOfMemoryException">The allocation exceeds the budget or the device's memory.</exception>
    public DeviceBuffer<T> Allocate<T>(long length, MemoryCategory category, string name) where T : unmanaged
    {
        if (length < 0)
            throw new ArgumentOutOfRangeException(nameof(length), length, "Length must be non-negative.");
        var bytes = length * Interop.SizeOf<T>();
        lock (_gate)
        {
            if (BudgetBytes is { } budget && _currentTotal + bytes > budget)
                throw OutOfMemory(name, category, bytes, null);
        }
        MemoryBuffer1D<T, Stride1D.Dense> buffer;
        try
        {
            // A zero-length buffer still gets one element so views are valid; it is accounted as zero bytes.
            buffer = _accelerator.Allocate1D<T>(Math.Max(length, 1));
        }
        catch (Exception e) when (e is OutOfMemoryException or AcceleratorException or InvalidOperationException)
        {
            throw OutOfMemory(name, category, bytes, e);
        }
        lock (_gate)
        {
            _allocationCount++;
            _current[(int)category] += bytes;
            _currentTotal += bytes;
            _peak[(int)category] = Math.Max(_peak[(int)category], _current[(int)category]);
            _peakTotal = Math.Max(_peakTotal, _currentTotal);
        }
        return new DeviceBuffer<T>(this, buffer, length, category, name);
    }

    internal void Release(MemoryCategory category, long bytes)
    {
        lock (_gate)
        {
            _current[(int)category] -= bytes;
            _currentTotal -= bytes;
        }
    }

    private DeviceOutOfMemoryException OutOfMemory(string name, MemoryCategory category, long bytes, Exception? inner)
    {
        var inUse = string.Join(", ", CurrentByCategory().Where(kv => kv.Value > 0).Select(kv => $"{kv.Key} {Format(kv.Value)}"));
        var limit = BudgetBytes is { } b ? $"budget {Format(b)}" : $"device memory {Format(_accelerator.MemorySize)}";
        return new DeviceOutOfMemoryException(
            $"Device out of memory allocating '{name}' ({CategoryName(category)}, {Format(bytes)}); " +
            $"in use: {(inUse.Length == 0 ? "nothing" : inUse)}; {limit}. " +
            "Try the relay executor with --stash host, a smaller micro-batch (more --micro-batches for the same --batch), " +
            "a shorter --seq or a smaller --batch; `l2l bench train` reports the device peak of each executor and stash placement.", inner);
    }

    /// <summary>Formats a byte count for people (KiB, MiB, GiB).</summary>
    public static string Format(long bytes) => bytes switch
    {
        >= 1L << 50 => "unbounded", // the CPU accelerator reports no real limit
        >= 1L << 40 => $"{bytes / (double)(1L << 40):G4} TiB",
        >= 1L << 30 => $"{bytes / (double)(1L << 30):F2} GiB",
        >= 1L << 20 => $"{bytes / (double)(1L << 20):F2} MiB",
        >= 1L << 10 => $"{bytes / (double)(1L << 10):F1} KiB",
        _ => $"{bytes} B",
    };
}

/// <summary>A tracked device buffer. Dispose returns its bytes to the tracker.</summary>
/// <typeparam name="T">Element type.</typeparam>
public sealed class DeviceBuffer<T> : IDisposable where T : unmanaged
{
    private readonly MemoryTracker _tracker;
    private MemoryBuffer1D<T, Stride1D.Dense>? _buffer;

    internal DeviceBuffer(MemoryTracker tracker, MemoryBuffer1D<T, Stride1D.Dense> buffer, long length, MemoryCategory category, string name)
    {
        _tracker = tracker;
        _buffer = buffer;
        Length = length;
        Category = category;
        Name = name;
    }

    /// <summary>Number of elements.</summary>
    public long Length { get; }

    /// <summary>What the buffer holds.</summary>
    public MemoryCategory Category { get; }

    /// <summary>A name for error messages and reports.</summary>
    public string Name { get; }

    /// <summary>Size in bytes as accounted.</summary>
    public long Bytes => Length * Interop.SizeOf<T>();

    /// <summary>A view of the whole buffer (exactly <see cref="Length"/> elements).</summary>
    public ArrayView<T> View => (_buffer ?? throw new ObjectDisposedException(Name)).View.SubView(0, Length);

    /// <summary>A view of <paramref name="length"/> elements starting at <paramref name="offset"/>.</summary>
    public ArrayView<T> Slice(long offset, long length)
    {
        if (offset < 0 || length < 0 || offset + length > Length)
            throw new ArgumentOutOfRangeException(nameof(offset), $"Slice [{offset}, {offset + length}) is outside '{Name}' of length {Length}.");
        return View.SubView(offset, length);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        var buffer = Interlocked.Exchange(ref _buffer, null);
        if (buffer is null)
            return;
        buffer.Dispose();
        _tracker.Release(Category, Bytes);
    }
}
