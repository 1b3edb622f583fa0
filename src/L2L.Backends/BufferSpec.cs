// What a device buffer will be before it exists, and the accelerator limits that decide device-dependent buffer sizes.
using ILGPU;
using ILGPU.Runtime;

namespace L2L.Backends;

/// <summary>
/// One device buffer as planned: its name, what it holds and how many elements of which size. The executors and the
/// planner build the same lists of these, so what is allocated and what is predicted come from one description.
/// </summary>
/// <param name="Name">The name the tracker reports (e.g. <c>block-slot.0</c>).</param>
/// <param name="Category">What the buffer holds.</param>
/// <param name="Length">Elements.</param>
/// <param name="ElementSize">Bytes per element (4 for FP32 and int32; a 16-bit precision would give 2).</param>
public readonly record struct BufferSpec(string Name, MemoryCategory Category, long Length, int ElementSize = 4)
{
    /// <summary>Bytes the tracker accounts for the buffer.</summary>
    public long Bytes => Length * ElementSize;
}

/// <summary>
/// The accelerator limits that launch shapes, and therefore a few scratch lengths, depend on — readable from an
/// ILGPU <see cref="Device"/> without creating an accelerator, so a plan needs no device memory and no kernels.
/// </summary>
/// <param name="IsCpu">Whether this is ILGPU's CPU accelerator.</param>
/// <param name="MaxNumThreads">Threads the whole device runs at once.</param>
/// <param name="MaxGroupSize">Maximum threads per group.</param>
/// <param name="WarpSize">Threads per warp.</param>
public readonly record struct DeviceShape(bool IsCpu, long MaxNumThreads, int MaxGroupSize, int WarpSize)
{
    /// <summary>The shape of a created accelerator.</summary>
    public static DeviceShape Of(Accelerator accelerator) =>
        new(accelerator.AcceleratorType == AcceleratorType.CPU, accelerator.MaxNumThreads, accelerator.MaxNumThreadsPerGroup, accelerator.WarpSize);

    /// <summary>The shape of a device an accelerator could be created on.</summary>
    public static DeviceShape Of(Device device) =>
        new(device.AcceleratorType == AcceleratorType.CPU, device.MaxNumThreads, device.MaxNumThreadsPerGroup, device.WarpSize);
}

/// <summary>Allocation from a <see cref="BufferSpec"/>.</summary>
public static class BufferSpecs
{
    /// <summary>Allocates the buffer <paramref name="spec"/> describes; its element size must be that of <typeparamref name="T"/>.</summary>
    public static DeviceBuffer<T> Allocate<T>(this Backend backend, BufferSpec spec) where T : unmanaged
    {
        if (Interop.SizeOf<T>() != spec.ElementSize)
            throw new ArgumentException($"Buffer '{spec.Name}' is planned with {spec.ElementSize}-byte elements, not {typeof(T).Name}.", nameof(spec));
        return backend.Allocate<T>(spec.Length, spec.Category, spec.Name);
    }

    /// <summary>The spec named <paramref name="name"/> in <paramref name="specs"/>.</summary>
    public static BufferSpec Named(this IEnumerable<BufferSpec> specs, string name) =>
        specs.FirstOrDefault(s => s.Name == name) is { Name: not null } found ? found
            : throw new KeyNotFoundException($"No buffer named '{name}' is planned.");
}
