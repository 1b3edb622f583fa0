// Finds the accelerators present and picks one: CUDA, then OpenCL, then the CPU accelerator.
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime.OpenCL;

namespace L2L.Backends;

/// <summary>Thrown when the asked-for device kind or index is absent; the message lists what is present.</summary>
public sealed class DeviceNotFoundException : Exception
{
    /// <summary>Creates the exception.</summary>
    public DeviceNotFoundException(string message) : base(message) { }
}

/// <summary>One accelerator found on this machine.</summary>
/// <param name="Kind">CPU, CUDA or OpenCL.</param>
/// <param name="Index">Index among devices of the same kind.</param>
/// <param name="Name">The device's name.</param>
/// <param name="MemoryBytes">Device memory in bytes.</param>
/// <param name="WarpSize">Threads per warp.</param>
/// <param name="MaxGroupSize">Maximum threads per group.</param>
/// <param name="Multiprocessors">Number of multiprocessors (parallel groups on the CPU accelerator).</param>
public sealed record DeviceInfo(DeviceKind Kind, int Index, string Name, long MemoryBytes, int WarpSize, int MaxGroupSize, int Multiprocessors);

/// <summary>Enumerates and selects accelerators.</summary>
public static class DeviceCatalog
{
    /// <summary>
    /// The CPU accelerator used by <see cref="CreateContext()"/>. Every simulated thread is an OS
    /// thread and a launch wakes all of them, so launch cost grows with the thread count (measured on
    /// 2 cores: 0.15 ms per element-wise launch with 2-thread groups, 5.5 ms with 64-thread groups):
    /// the engine uses <see cref="LeanCpuDevice"/> unless <c>L2L_CPU_SHAPE</c> says otherwise.
    /// </summary>
    public static CPUDevice CpuDevice { get; } = CreateCpuDevice(Environment.GetEnvironmentVariable("L2L_CPU_SHAPE"));

    /// <summary>Two threads per group, one group per core: the fastest shape for the engine's kernels.</summary>
    public static CPUDevice LeanCpuDevice => new(numThreadsPerWarp: 2, numWarpsPerMultiprocessor: 1, numMultiprocessors: Math.Max(1, Environment.ProcessorCount));

    /// <summary>GPU-shaped groups (warps of 16, up to 64 threads): slower, but exercises grouped kernels' shared-memory paths; used by the kernel tests.</summary>
    public static CPUDevice GroupedCpuDevice => new(numThreadsPerWarp: 16, numWarpsPerMultiprocessor: 4, numMultiprocessors: Math.Max(1, Environment.ProcessorCount));

    /// <summary>
    /// The CPU device for a shape "threadsPerWarp,warpsPerGroup,multiprocessors" (from <c>L2L_CPU_SHAPE</c>), or the default.
    /// </summary>
    public static CPUDevice CreateCpuDevice(string? shape)
    {
        if (!string.IsNullOrWhiteSpace(shape))
        {
            var parts = shape.Split(',');
            if (parts.Length == 3 && parts.All(p => int.TryParse(p, out var v) && v > 0))
                return new CPUDevice(int.Parse(parts[0]), int.Parse(parts[1]), int.Parse(parts[2]));
            throw new FormatException($"L2L_CPU_SHAPE '{shape}' must be three positive integers: threadsPerWarp,warpsPerGroup,multiprocessors.");
        }
        return LeanCpuDevice;
    }

    /// <summary>Creates a context with every backend the engine supports, optimised and with ILGPU.Algorithms enabled.</summary>
    public static Context CreateContext() => CreateContext(CpuDevice);

    /// <summary>Creates a context like <see cref="CreateContext()"/> with a chosen CPU accelerator shape.</summary>
    public static Context CreateContext(CPUDevice cpu)
    {
        NativeLibraries.Register();
        return Context.Create(builder =>
        {
            builder.CPU(cpu);
            TryAdd(() => builder.Cuda());
            TryAdd(() => builder.OpenCL());
            builder.Optimize(OptimizationLevel.O2).EnableAlgorithms();
        });
    }

    private static void TryAdd(Action add)
    {
        try { add(); }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or TypeInitializationException or NotSupportedException or InvalidOperationException or AcceleratorException)
        {
            // The driver is absent or unusable: that kind simply has no devices.
        }
    }

    /// <summary>Lists every device in <paramref name="context"/>.</summary>
    public static IReadOnlyList<DeviceInfo> List(Context context)
    {
        var result = new List<DeviceInfo>();
        foreach (var kind in new[] { DeviceKind.Cuda, DeviceKind.OpenCL, DeviceKind.Cpu })
        {
            var devices = DevicesOf(context, kind);
            for (var i = 0; i < devices.Count; i++)
            {
                var d = devices[i];
                result.Add(new DeviceInfo(kind, i, d.Name, d.MemorySize, d.WarpSize, d.MaxNumThreadsPerGroup, d.NumMultiprocessors));
            }
        }
        return result;
    }

    /// <summary>Lists every device on this machine.</summary>
    public static IReadOnlyList<DeviceInfo> List()
    {
        using var context = CreateContext();
        return List(context);
    }

    /// <summary>The kind <c>auto</c> picks given what is present: CUDA, then OpenCL, then CPU.</summary>
    public static DeviceKind AutoKind(IReadOnlyList<DeviceInfo> devices) =>
        devices.Any(d => d.Kind == DeviceKind.Cuda) ? DeviceKind.Cuda
        : devices.Any(d => d.Kind == DeviceKind.OpenCL) ? DeviceKind.OpenCL
        : DeviceKind.Cpu;

    /// <summary>Selects the device <paramref name="spec"/> names.</summary>
    /// <exception cref="DeviceNotFoundException">No such device; the message lists the devices present.</exception>
    public static (Device Device, DeviceKind Kind) Select(Context context, DeviceSpec spec)
    {
        var kind = spec.Kind == DeviceKind.Auto ? AutoKind(List(context)) : spec.Kind;
        var devices = DevicesOf(context, kind);
        var index = spec.Kind == DeviceKind.Auto ? 0 : spec.Index;
        if (index < devices.Count)
            return (devices[index], kind);
        var present = List(context);
        var listing = string.Join("; ", present.Select(d => $"{d.Kind.ToString().ToLowerInvariant()}:{d.Index} {d.Name}"));
        var what = devices.Count == 0 ? $"No {kind} device is present" : $"There is no {kind} device {index} (found {devices.Count})";
        throw new DeviceNotFoundException(
            $"{what}. Devices found: {listing}. Pass --device (or set {DeviceSpec.EnvironmentVariable}) to one of these, or 'auto'." +
            (kind == DeviceKind.Cuda ? " For CUDA the NVIDIA driver (libcuda.so.1) must be installed." : "") +
            (kind == DeviceKind.OpenCL ? " OpenCL needs a 2.x device with generic address space support." : ""));
    }

    private static IReadOnlyList<Device> DevicesOf(Context context, DeviceKind kind)
    {
        var type = kind switch
        {
            DeviceKind.Cuda => AcceleratorType.Cuda,
            DeviceKind.OpenCL => AcceleratorType.OpenCL,
            DeviceKind.Cpu => AcceleratorType.CPU,
            _ => throw new ArgumentOutOfRangeException(nameof(kind)),
        };
        var result = new List<Device>();
        foreach (var device in context.Devices)
        {
            if (device.AcceleratorType == type)
                result.Add(device);
        }
        return result;
    }
}
