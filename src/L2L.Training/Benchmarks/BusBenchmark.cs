// Host-to-device and device-to-host bandwidth through the engine's pinned buffers and copy stream.
using System.Diagnostics;
using L2L.Backends;

namespace L2L.Training.Benchmarks;

/// <summary>Measured transfer bandwidth, with the machine and device it ran on.</summary>
/// <param name="Machine">The host.</param>
/// <param name="Device">The accelerator.</param>
/// <param name="Bytes">Bytes per transfer.</param>
/// <param name="HostToDeviceBytesPerS">Best host-to-device rate.</param>
/// <param name="DeviceToHostBytesPerS">Best device-to-host rate.</param>
public sealed record BusReport(MachineInfo Machine, string Device, long Bytes, double HostToDeviceBytesPerS, double DeviceToHostBytesPerS)
{

    /// <summary>Indented JSON.</summary>
    public string ToJson() => BenchmarkJson.Serialize(this);
}

/// <summary>Times copies of one pinned buffer to and from the device on the copy stream, as the relay does with layers.</summary>
public static class BusBenchmark
{
    /// <summary>Best of <paramref name="repeats"/> copies each way of <paramref name="bytes"/> bytes.</summary>
    public static BusReport Run(Backend backend, long bytes, int repeats)
    {
        var floats = Math.Max(1, bytes / sizeof(float));
        using var host = backend.AllocatePinned<float>(floats);
        using var device = backend.Allocate<float>(floats, MemoryCategory.Other, "bench.bus");
        host.Span.Fill(1f);
        var stream = backend.CopyStream;
        double Best(Action copy)
        {
            copy();
            stream.Synchronize();
            var best = double.MaxValue;
            for (var r = 0; r < repeats; r++)
            {
                var clock = Stopwatch.StartNew();
                copy();
                stream.Synchronize();
                best = Math.Min(best, clock.Elapsed.TotalSeconds);
            }
            return best;
        }
        var toDevice = Best(() => host.CopyToDeviceAsync(stream, device.View));
        var toHost = Best(() => host.CopyFromDeviceAsync(stream, device.View));
        var moved = floats * sizeof(float);
        return new BusReport(MachineInfo.Current(), backend.Description, moved, moved / toDevice, moved / toHost);
    }
}
