// One object that owns an accelerator and everything on it: Context > Accelerator > kernels > memory.
using System.Collections.Concurrent;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime.OpenCL;

namespace L2L.Backends;

/// <summary>
/// Owns the ILGPU <see cref="ILGPU.Context"/>, the chosen <see cref="ILGPU.Runtime.Accelerator"/>, its
/// compute and copy streams, the <see cref="MemoryTracker"/> and the loaded kernel groups
/// (<see cref="Get{T}"/>). Disposal runs in reverse order of creation.
/// </summary>
/// <remarks>
/// Stream rules: ILGPU has no stream-waits-on-event call, so work on <see cref="CopyStream"/> is
/// ordered before work on <see cref="ComputeStream"/> by synchronizing the copy stream from the
/// host before enqueueing the dependent compute work, and vice versa. Kernel groups are loaded
/// with stream-taking launchers; nothing in the engine uses the accelerator's default stream.
/// </remarks>
public sealed class Backend : IDisposable
{
    private readonly ConcurrentDictionary<Type, object> _ops = new();
    private readonly object _loadGate = new();
    private bool _disposed;

    private Backend(Context context, Accelerator accelerator, DeviceKind kind)
    {
        Context = context;
        Accelerator = accelerator;
        Kind = kind;
        ComputeStream = accelerator.CreateStream();
        CopyStream = accelerator.CreateStream();
        Memory = new MemoryTracker(accelerator);
    }

    /// <summary>The ILGPU context.</summary>
    public Context Context { get; }

    /// <summary>The accelerator all work runs on.</summary>
    public Accelerator Accelerator { get; }

    /// <summary>The kind of the accelerator.</summary>
    public DeviceKind Kind { get; }

    /// <summary>The stream kernels run on.</summary>
    public AcceleratorStream ComputeStream { get; }

    /// <summary>The stream host/device transfers run on.</summary>
    public AcceleratorStream CopyStream { get; }

    /// <summary>The tracker every device allocation goes through.</summary>
    public MemoryTracker Memory { get; }

    /// <summary>A one-line description: kind, name, memory.</summary>
    public string Description => $"{Kind.ToString().ToLowerInvariant()}: {Accelerator.Name} ({MemoryTracker.Format(Accelerator.MemorySize)})";

    /// <summary>
    /// Creates a backend on the device <paramref name="spec"/> asks for.
    /// </summary>
    /// <exception cref="DeviceNotFoundException">No device of the asked-for kind and index is present.</exception>
    public static Backend Create(DeviceSpec spec) => Create(spec, DeviceCatalog.CpuDevice);

    /// <summary>Creates a backend like <see cref="Create(DeviceSpec)"/>, with a chosen shape for the CPU accelerator.</summary>
    public static Backend Create(DeviceSpec spec, CPUDevice cpu)
    {
        var context = DeviceCatalog.CreateContext(cpu);
        try
        {
            var (device, kind) = DeviceCatalog.Select(context, spec);
            var accelerator = device.CreateAccelerator(context);
            return new Backend(context, accelerator, kind);
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    /// <summary>Creates a backend on the CPU accelerator.</summary>
    public static Backend CreateCpu() => Create(new DeviceSpec(DeviceKind.Cpu));

    /// <summary>
    /// The kernel group <typeparamref name="T"/> for this accelerator, loading its kernels on first
    /// use (once, from one thread). <typeparamref name="T"/> must have a public constructor taking a <see cref="Backend"/>.
    /// </summary>
    public T Get<T>() where T : class
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_ops.TryGetValue(typeof(T), out var existing))
            return (T)existing;
        lock (_loadGate)
        {
            if (_ops.TryGetValue(typeof(T), out existing))
                return (T)existing;
            var created = (T)Activator.CreateInstance(typeof(T), this)!;
            _ops[typeof(T)] = created;
            return created;
        }
    }

    /// <summary>Allocates a tracked device buffer (shorthand for <see cref="MemoryTracker.Allocate{T}"/>).</summary>
    public DeviceBuffer<T> Allocate<T>(long length, MemoryCategory category, string name) where T : unmanaged =>
        Memory.Allocate<T>(length, category, name);

    /// <summary>Allocates a pinned, page-locked host buffer for asynchronous transfers.</summary>
    public PinnedHostBuffer<T> AllocatePinned<T>(long length) where T : unmanaged => new(Accelerator, length, Memory);

    /// <summary>Blocks until both streams are idle.</summary>
    public void Synchronize()
    {
        CopyStream.Synchronize();
        ComputeStream.Synchronize();
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        try { Synchronize(); } catch (Exception) { /* a faulted device: still release what we own */ }
        foreach (var op in _ops.Values)
            (op as IDisposable)?.Dispose();
        _ops.Clear();
        CopyStream.Dispose();
        ComputeStream.Dispose();
        Accelerator.Dispose();
        Context.Dispose();
    }
}
