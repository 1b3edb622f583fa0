// A run's buffers and transfers, predicted before anything is allocated: what the executors allocate and what `l2l plan` prints.
using System.Text.Json;
using L2L.Backends;

namespace L2L.Training.Planning;

/// <summary>
/// Every device buffer an executor allocates (in allocation order), the host memory the run holds (pinned buffers and the
/// param server's optimizer state) and the bytes each step moves over the bus, by kind. Device memory is allocated once,
/// when the executor is built, and never freed during training, so the device peak is the sum of the device buffers.
/// </summary>
/// <param name="Settings">What the plan is for.</param>
/// <param name="Device">Device buffers, in allocation order.</param>
/// <param name="Host">Host buffers: the param server's and the executor's pinned buffers, and the optimizer state.</param>
/// <param name="Bus">Bytes per step over the bus.</param>
public sealed record ExecutionPlan(PlanSettings Settings, IReadOnlyList<BufferSpec> Device, IReadOnlyList<BufferSpec> Host, BusTraffic Bus)
{
    /// <summary>The device peak: every device buffer at once.</summary>
    public long DevicePeakBytes => Device.Sum(b => b.Bytes);

    /// <summary>The device peak per category, keyed like <see cref="MemoryTracker.PeakByCategory"/> (every category, zeros included).</summary>
    public IReadOnlyDictionary<string, long> DevicePeakBytesByCategory
    {
        get
        {
            var result = new SortedDictionary<string, long>(StringComparer.Ordinal);
            foreach (var c in Enum.GetValues<MemoryCategory>())
                result[MemoryTracker.CategoryName(c)] = Device.Where(b => b.Category == c).Sum(b => b.Bytes);
            return result;
        }
    }

    /// <summary>Host bytes: pinned buffers (param server and executor) plus the param server's optimizer state.</summary>
    public long HostBytes => Host.Sum(b => b.Bytes);

    /// <summary>The planned device buffer <paramref name="name"/>.</summary>
    public BufferSpec Buffer(string name) => Device.Named(name);

    /// <summary>The planned host buffer <paramref name="name"/>.</summary>
    public BufferSpec HostBuffer(string name) => Host.Named(name);

    /// <summary>The <c>l2l plan --json</c> object.</summary>
    public Dictionary<string, object> ToJsonObject()
    {
        var bus = new Dictionary<string, long>(Bus.ByKind()) { ["total"] = Bus.Total };
        return new Dictionary<string, object>
        {
            ["executor"] = Settings.Executor.ToString().ToLowerInvariant(),
            ["stash"] = Settings.Stash.ToString().ToLowerInvariant(),
            ["stash_codec"] = Settings.Codec.Codec.ToString().ToLowerInvariant(),
            ["batch"] = Settings.Batch,
            ["micro_batches"] = Settings.MicroBatches,
            ["micro_batch_size"] = Settings.MicroBatchSize,
            ["seq"] = Settings.SeqLen,
            ["device_peak_bytes"] = DevicePeakBytes,
            ["device_peak_bytes_by_category"] = DevicePeakBytesByCategory,
            ["host_bytes"] = HostBytes,
            ["bus_bytes_per_step"] = bus,
        };
    }

    /// <summary>One JSON object (<see cref="ToJsonObject"/>).</summary>
    public string ToJson(bool indented = true) => JsonSerializer.Serialize(ToJsonObject(), new JsonSerializerOptions { WriteIndented = indented });
}
