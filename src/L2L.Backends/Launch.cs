// Grid shapes for the engine's kernels, chosen from the accelerator's limits.
using ILGPU;
using ILGPU.Runtime;

namespace L2L.Backends;

/// <summary>Picks launch extents so every accelerator gets enough, but not absurdly many, threads.</summary>
public static class Launch
{
    /// <summary>
    /// The launch for an explicitly grouped grid-stride element-wise kernel over <paramref name="n"/>
    /// elements: full groups, at most enough to cover every element once, and at most four waves of
    /// the whole device (one on the CPU accelerator, where every simulated thread is an OS thread).
    /// Kernels loop with stride <c>Grid.DimX * Group.DimX</c>, so any launch covers any length.
    /// </summary>
    public static KernelConfig Elementwise(Accelerator accelerator, long n) => Elementwise(DeviceShape.Of(accelerator), n);

    /// <summary>The launch <see cref="Elementwise(Accelerator, long)"/> picks, from the device's limits alone.</summary>
    public static KernelConfig Elementwise(DeviceShape device, long n)
    {
        var group = GroupSize(device);
        var waves = device.IsCpu ? 1L : 4L;
        var maxGroups = Math.Max(1L, device.MaxNumThreads * waves / group);
        var groups = Math.Clamp((n + group - 1) / group, 1, maxGroups);
        return new KernelConfig((int)groups, group);
    }

    /// <summary>The group size to use for row-wise kernels: <paramref name="preferred"/> capped by the device and rounded down to a multiple of the warp size.</summary>
    public static int GroupSize(Accelerator accelerator, int preferred = 256) => GroupSize(DeviceShape.Of(accelerator), preferred);

    /// <summary>The group size <see cref="GroupSize(Accelerator, int)"/> picks, from the device's limits alone.</summary>
    public static int GroupSize(DeviceShape device, int preferred = 256)
    {
        var size = Math.Min(preferred, device.MaxGroupSize);
        var warp = Math.Max(1, device.WarpSize);
        return Math.Max(warp, size / warp * warp);
    }

    /// <summary>Ceiling division.</summary>
    public static int CeilDiv(long a, long b) => checked((int)((a + b - 1) / b));
}
