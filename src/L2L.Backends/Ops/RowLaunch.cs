// Launch shapes for the row-wise reduction kernels (layernorm, cross-entropy): one group per row, grid-stride over rows.
using ILGPU;
using ILGPU.Runtime;
using L2L.Kernels;

namespace L2L.Backends.Ops;

/// <summary>Grid shapes for kernels where a group reduces one row at a time.</summary>
internal static class RowLaunch
{
    /// <summary>
    /// One group per row, capped at four waves of the device (one on the CPU accelerator); the group
    /// is sized to the row length (at most 256, at most <see cref="GroupReduce.MaxGroupSize"/>), so
    /// short rows do not leave most threads idle.
    /// </summary>
    public static KernelConfig Rows(Accelerator accelerator, int rows, int rowLength)
    {
        var group = Math.Min(Launch.GroupSize(accelerator, Math.Min(256, rowLength)), GroupReduce.MaxGroupSize);
        return new KernelConfig(Groups(accelerator, rows, group), group);
    }

    /// <summary><paramref name="wanted"/> groups of <paramref name="group"/> threads, capped at four waves of the device (one on the CPU accelerator).</summary>
    public static int Groups(Accelerator accelerator, long wanted, int group)
    {
        var waves = accelerator.AcceleratorType == AcceleratorType.CPU ? 1L : 4L;
        var maxGroups = Math.Max(1L, accelerator.MaxNumThreads * waves / group);
        return (int)Math.Clamp(wanted, 1L, maxGroups);
    }
}
