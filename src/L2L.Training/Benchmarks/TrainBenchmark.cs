// End-to-end training throughput and device memory: relay (device and host stash) against conventional, over micro-batch counts.
using L2L.Backends;
using L2L.Model;
using L2L.Model.Data;
using L2L.Training.Optim;

namespace L2L.Training.Benchmarks;

/// <summary>One executor configuration's measurements.</summary>
/// <param name="Executor">relay or conventional.</param>
/// <param name="Stash">device or host for relay; null for conventional.</param>
/// <param name="MicroBatches">U.</param>
/// <param name="Batch">Sequences per step (U × micro-batch size).</param>
/// <param name="TokensPerSecond">Median over the measured steps.</param>
/// <param name="StepSeconds">Median step time.</param>
/// <param name="DevicePeakBytes">Peak tracked device bytes.</param>
/// <param name="DevicePeakBytesByCategory">The peak per category.</param>
/// <param name="BusBytesPerStep">Host/device bytes per step.</param>
/// <param name="CopyWaitFraction">Median fraction of a step spent blocked on transfers.</param>
/// <param name="Error">Why the configuration could not run (e.g. out of device memory), else null.</param>
/// <param name="UpdateWaitFraction">Median fraction of a step spent blocked on the param server's host updates.</param>
/// <param name="HostBytesPerParameter">The relay param server's host bytes per parameter; null for conventional.</param>
public sealed record TrainBenchResult(
    string Executor,
    string? Stash,
    int MicroBatches,
    int Batch,
    double TokensPerSecond,
    double StepSeconds,
    long DevicePeakBytes,
    IReadOnlyDictionary<string, long>? DevicePeakBytesByCategory,
    long BusBytesPerStep,
    double CopyWaitFraction,
    string? Error,
    double UpdateWaitFraction = 0,
    double? HostBytesPerParameter = null);

/// <summary>A whole run of <see cref="TrainBenchmark"/>, with the machine it ran on.</summary>
public sealed record TrainBenchReport(
    MachineInfo Machine,
    string Device,
    string Model,
    long Parameters,
    int MicroBatchSize,
    int Seq,
    int Steps,
    IReadOnlyList<TrainBenchResult> Results,
    string StashCodec = "none")
{
    /// <summary>Indented JSON.</summary>
    public string ToJson() => BenchmarkJson.Serialize(this);

}

/// <summary>
/// Trains a few steps of each executor configuration on the built-in corpus and reports tokens/s,
/// device peak bytes, bus bytes and the fraction of time spent waiting on transfers. The
/// micro-batch size is fixed and the micro-batch count varies, so each layer visit covers more
/// tokens as U grows: the curve shows where the relay's transfers become hidden.
/// </summary>
public static class TrainBenchmark
{
    /// <summary>Runs every configuration; one that does not fit the device is reported with its error. <paramref name="codec"/> applies to the relay runs.</summary>
    public static TrainBenchReport Run(Backend backend, string modelName, IModelConfig config, int microBatchSize, int seq,
        IReadOnlyList<int> microBatchCounts, int steps, int warmup, Action<string>? log = null, Stash.StashCodecSettings? codec = null)
    {
        codec ??= new Stash.StashCodecSettings();
        var results = new List<TrainBenchResult>();
        var data = new SyntheticCorpus(Math.Min(256, config.VocabSize));
        foreach (var u in microBatchCounts)
        {
            foreach (var (executor, stash) in new (ExecutorKind, StashPlacement?)[]
                     { (ExecutorKind.Conventional, null), (ExecutorKind.Relay, StashPlacement.Device), (ExecutorKind.Relay, StashPlacement.Host) })
            {
                var options = new TrainOptions
                {
                    Config = config,
                    Steps = warmup + steps,
                    Batch = u * microBatchSize,
                    MicroBatches = u,
                    SeqLen = seq,
                    Optimizer = new OptimizerSettings(OptimizerKind.AdamW, 1e-4f),
                    Executor = executor,
                    Stash = stash ?? StashPlacement.Device,
                    StashCodec = executor == ExecutorKind.Relay ? codec.Codec : Stash.StashCodec.None,
                    StashGroup = codec.GroupSize,
                };
                var name = executor.ToString().ToLowerInvariant();
                var stashName = stash?.ToString().ToLowerInvariant();
                try
                {
                    using var trainer = new Trainer(backend, options, data);
                    var metrics = trainer.Run().Skip(warmup).ToList();
                    var result = new TrainBenchResult(name, stashName, u, options.Batch,
                        Median(metrics.Select(m => m.TokensPerSecond)), Median(metrics.Select(m => m.StepSeconds)),
                        metrics[^1].DevicePeakBytes, metrics[^1].DevicePeakBytesByCategory, metrics[^1].BusBytes,
                        Median(metrics.Select(m => m.CopyWaitFraction)), null,
                        Median(metrics.Select(m => m.UpdateWaitFraction)), trainer.HostBytesPerParameter);
                    results.Add(result);
                    log?.Invoke($"U={u,-3} {name,-12} {stashName ?? "",-6} {result.TokensPerSecond,10:F0} tok/s  peak {MemoryTracker.Format(result.DevicePeakBytes),10}  bus {MemoryTracker.Format(result.BusBytesPerStep),10}/step  copy wait {result.CopyWaitFraction:P1}  update wait {result.UpdateWaitFraction:P1}");
                }
                catch (DeviceOutOfMemoryException e)
                {
                    results.Add(new TrainBenchResult(name, stashName, u, options.Batch, 0, 0, 0, null, 0, 0, e.Message));
                    log?.Invoke($"U={u,-3} {name,-12} {stashName ?? "",-6} does not fit: {e.Message}");
                }
            }
        }
        var codecName = codec.Enabled ? $"{codec.Codec.ToString().ToLowerInvariant()} (groups of {codec.GroupSize})" : "none";
        return new TrainBenchReport(MachineInfo.Current(), backend.Description, modelName, config.ParameterCount, microBatchSize, seq, steps, results, codecName);
    }

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.OrderBy(v => v).ToArray();
        if (sorted.Length == 0) return 0;
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }
}
