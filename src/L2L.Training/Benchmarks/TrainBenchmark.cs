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
/// <param name="MicroBatchSize">Sequences per micro-batch.</param>
/// <param name="Batch">Sequences per step (U × micro-batch size).</param>
/// <param name="TokensPerSecond">Median over the measured steps.</param>
/// <param name="StepSeconds">Median step time.</param>
/// <param name="DevicePeakBytes">Peak tracked device bytes.</param>
/// <param name="DevicePeakBytesByCategory">The peak per category.</param>
/// <param name="BusBytesPerStep">Host/device bytes per step.</param>
/// <param name="CopyWaitFraction">Median fraction of a step spent blocked on transfers.</param>
/// <param name="Error">Why the configuration did not run: out of device memory, or "skipped: ..." (a smaller
/// micro-batch already did not fit, or the time budget ran out); else null.</param>
/// <param name="UpdateWaitFraction">Median fraction of a step spent blocked on the param server's host updates.</param>
/// <param name="HostBytesPerParameter">The relay param server's host bytes per parameter; null for conventional.</param>
/// <param name="BusBytesByKind">The bus bytes per step by kind (weights, grads, stash, boundary_grads, io); null when it did not run.</param>
/// <param name="Precision">The device storage precision: fp32, bf16 or fp16.</param>
public sealed record TrainBenchResult(
    string Executor,
    string? Stash,
    int MicroBatches,
    int MicroBatchSize,
    int Batch,
    double TokensPerSecond,
    double StepSeconds,
    long DevicePeakBytes,
    IReadOnlyDictionary<string, long>? DevicePeakBytesByCategory,
    long BusBytesPerStep,
    double CopyWaitFraction,
    string? Error,
    double UpdateWaitFraction = 0,
    double? HostBytesPerParameter = null,
    IReadOnlyDictionary<string, long>? BusBytesByKind = null,
    string Precision = "fp32");

/// <summary>A whole run of <see cref="TrainBenchmark"/>, with the machine it ran on.</summary>
/// <param name="Machine">The host.</param>
/// <param name="Device">The accelerator.</param>
/// <param name="Model">Preset or config name.</param>
/// <param name="Parameters">Parameter count.</param>
/// <param name="ModelFlopsPerToken">Model FLOPs per trained token (see <see cref="TrainBenchmark.ModelFlopFormula"/>); MFU is
/// tokens/s times this over the device's peak.</param>
/// <param name="ModelFlopFormula">The formula behind <paramref name="ModelFlopsPerToken"/>.</param>
/// <param name="MicroBatchSizes">Sequences per micro-batch measured.</param>
/// <param name="Seq">Tokens per sequence.</param>
/// <param name="Steps">Measured steps per configuration.</param>
/// <param name="Results">One per configuration.</param>
/// <param name="StashCodec">The relay runs' stash codec (none, or e.g. "int8 (groups of 256)").</param>
public sealed record TrainBenchReport(
    MachineInfo Machine,
    string Device,
    string Model,
    long Parameters,
    double ModelFlopsPerToken,
    string ModelFlopFormula,
    IReadOnlyList<int> MicroBatchSizes,
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
    /// <summary>
    /// Model FLOPs per token: 6·N for the products with N = 12·L·C² block weights + V·C for the tied head
    /// (forward and backward), plus 12·L·C·T for attention's QKᵀ and PV (PaLM's convention, causal masking not
    /// discounted). Recomputation is not counted: these are model FLOPs, not hardware FLOPs.
    /// </summary>
    public const string ModelFlopFormula = "6*(12*L*C^2 + V*C) + 12*L*C*T per token (PaLM convention; relay recompute not counted)";

    /// <summary>The value of <see cref="ModelFlopFormula"/> for <paramref name="config"/> at <paramref name="seq"/> tokens.</summary>
    public static double ModelFlopsPerToken(IModelConfig config, int seq)
    {
        double l = config.Layers, c = config.Channels, v = config.VocabSize;
        return 6 * (12 * l * c * c + v * c) + 12 * l * c * seq;
    }

    /// <summary>Runs every configuration at one micro-batch size (see the overload).</summary>
    public static TrainBenchReport Run(Backend backend, string modelName, IModelConfig config, int microBatchSize, int seq,
        IReadOnlyList<int> microBatchCounts, int steps, int warmup, Action<string>? log = null) =>
        Run(backend, modelName, config, [microBatchSize], seq, microBatchCounts, steps, warmup, log);

    /// <summary>The three executor configurations <see cref="Run(Backend, string, IModelConfig, IReadOnlyList{int}, int, IReadOnlyList{int}, int, int, Action{string}?, double?, Stash.StashCodecSettings?, IReadOnlyList{Precision}?, IReadOnlyList{ValueTuple{ExecutorKind, StashPlacement?}}?)"/> measures by default.</summary>
    public static readonly IReadOnlyList<(ExecutorKind Executor, StashPlacement? Stash)> AllExecutors =
        [(ExecutorKind.Conventional, null), (ExecutorKind.Relay, StashPlacement.Device), (ExecutorKind.Relay, StashPlacement.Host)];

    /// <summary>
    /// Runs every executor at every precision, micro-batch size and count; one that does not fit the device is reported with its
    /// error, and the same executor is not tried at a larger micro-batch size for that count. Past
    /// <paramref name="budgetSeconds"/> the remaining configurations are reported as skipped. <paramref name="codec"/> applies to the relay runs.
    /// </summary>
    public static TrainBenchReport Run(Backend backend, string modelName, IModelConfig config, IReadOnlyList<int> microBatchSizes, int seq,
        IReadOnlyList<int> microBatchCounts, int steps, int warmup, Action<string>? log = null, double? budgetSeconds = null,
        Stash.StashCodecSettings? codec = null, IReadOnlyList<Precision>? precisions = null, IReadOnlyList<(ExecutorKind, StashPlacement?)>? executors = null)
    {
        codec ??= new Stash.StashCodecSettings();
        precisions ??= [Precision.Fp32];
        executors ??= AllExecutors;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var results = new List<TrainBenchResult>();
        var data = new SyntheticCorpus(Math.Min(256, config.VocabSize));
        var tooLarge = new HashSet<(string, string?, int, Precision)>();
        foreach (var precision in precisions)
        foreach (var m in microBatchSizes)
        foreach (var u in microBatchCounts)
        {
            foreach (var (executor, stash) in executors)
            {
                var options = new TrainOptions
                {
                    Config = config,
                    Steps = warmup + steps,
                    Batch = u * m,
                    MicroBatches = u,
                    SeqLen = seq,
                    Optimizer = new OptimizerSettings(OptimizerKind.AdamW, 1e-4f),
                    Executor = executor,
                    Stash = stash ?? StashPlacement.Device,
                    StashCodec = executor == ExecutorKind.Relay ? codec.Codec : Stash.StashCodec.None,
                    StashGroup = codec.GroupSize,
                    StashBitsBudget = codec.BitsBudget,
                    StashAdaptEvery = codec.AdaptEvery,
                    Precision = precision,
                };
                var name = executor.ToString().ToLowerInvariant();
                var stashName = stash?.ToString().ToLowerInvariant();
                var p = precision.Name();
                var label = $"{p} M={m,-3} U={u,-3} {name,-12} {stashName ?? "",-6}";
                string? skip = tooLarge.Contains((name, stashName, u, precision)) ? "skipped: a smaller micro-batch did not fit"
                    : budgetSeconds is { } budget && clock.Elapsed.TotalSeconds > budget ? $"skipped: over the {budget:F0} s budget" : null;
                if (skip is not null)
                {
                    results.Add(new TrainBenchResult(name, stashName, u, m, options.Batch, 0, 0, 0, null, 0, 0, skip, Precision: p));
                    log?.Invoke($"{label} {skip}");
                    continue;
                }
                try
                {
                    using var trainer = new Trainer(backend, options, data);
                    var metrics = trainer.Run().Skip(warmup).ToList();
                    var result = new TrainBenchResult(name, stashName, u, m, options.Batch,
                        Median(metrics.Select(x => x.TokensPerSecond)), Median(metrics.Select(x => x.StepSeconds)),
                        metrics[^1].DevicePeakBytes, metrics[^1].DevicePeakBytesByCategory, metrics[^1].BusBytes,
                        Median(metrics.Select(x => x.CopyWaitFraction)), null,
                        Median(metrics.Select(x => x.UpdateWaitFraction)), trainer.HostBytesPerParameter, metrics[^1].BusBytesByKind.ByKind(), p);
                    results.Add(result);
                    log?.Invoke($"{label} {result.TokensPerSecond,10:F0} tok/s  peak {MemoryTracker.Format(result.DevicePeakBytes),10}  bus {MemoryTracker.Format(result.BusBytesPerStep),10}/step ({string.Join(", ", result.BusBytesByKind!.Where(k => k.Value > 0).Select(k => $"{k.Key} {MemoryTracker.Format(k.Value)}"))})  copy wait {result.CopyWaitFraction:P1}  update wait {result.UpdateWaitFraction:P1}");
                }
                catch (DeviceOutOfMemoryException e)
                {
                    tooLarge.Add((name, stashName, u, precision));
                    results.Add(new TrainBenchResult(name, stashName, u, m, options.Batch, 0, 0, 0, null, 0, 0, e.Message, Precision: p));
                    log?.Invoke($"{label} does not fit: {e.Message}");
                }
            }
        }
        return new TrainBenchReport(MachineInfo.Current(), backend.Description, modelName, config.ParameterCount,
            ModelFlopsPerToken(config, seq), ModelFlopFormula, microBatchSizes, seq, steps, results,
            codec.Enabled ? $"{codec.Codec.ToString().ToLowerInvariant()} (groups of {codec.GroupSize}" +
                (codec.IsAdaptive ? $", budget {codec.BitsBudget.ToString(System.Globalization.CultureInfo.InvariantCulture)} bits, every {codec.AdaptEvery} steps)" : ")") : "none");
    }

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.OrderBy(v => v).ToArray();
        if (sorted.Length == 0) return 0;
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }
}

/// <summary>One configuration of <see cref="ScalingBenchmark"/>: the same work per device on one device and on all of them.</summary>
/// <param name="MicroBatchSize">Sequences per micro-batch.</param>
/// <param name="MicroBatchesPerDevice">Micro-batches each device runs per step (U on the single device).</param>
/// <param name="Devices">Accelerators per rank.</param>
/// <param name="Ranks">MPI ranks.</param>
/// <param name="SingleTokensPerSecond">Median tokens/s of one device alone (one process), or 0 on ranks that did not measure it.</param>
/// <param name="TokensPerSecond">Median tokens/s of the whole job (global batch over step time).</param>
/// <param name="ScalingEfficiency">TokensPerSecond ÷ (Devices × Ranks × SingleTokensPerSecond); 0 where the single-device figure is missing.</param>
/// <param name="CollectiveSeconds">Median seconds per step in gradient reductions and weight gathers.</param>
/// <param name="CollectiveHiddenSeconds">Median part of those that overlapped device work.</param>
/// <param name="Error">Why the configuration did not run (out of device memory), else null.</param>
public sealed record ScalingBenchResult(int MicroBatchSize, int MicroBatchesPerDevice, int Devices, int Ranks, double SingleTokensPerSecond,
    double TokensPerSecond, double ScalingEfficiency, double CollectiveSeconds, double CollectiveHiddenSeconds, string? Error);

/// <summary>A run of <see cref="ScalingBenchmark"/>.</summary>
/// <param name="Machine">The host (rank 0's).</param>
/// <param name="Devices">The accelerators of rank 0, in order.</param>
/// <param name="Ranks">MPI ranks (1 without MPI).</param>
/// <param name="Model">Preset or config name.</param>
/// <param name="Parameters">Parameter count.</param>
/// <param name="Seq">Tokens per sequence.</param>
/// <param name="Steps">Measured steps per configuration (after the warmup steps).</param>
/// <param name="Stash">The relay's stash placement.</param>
/// <param name="Results">One per micro-batch size and count.</param>
/// <param name="Definition">How the efficiency is formed.</param>
/// <param name="ShardOptimizer">Whether the ranks sharded the optimizer state.</param>
public sealed record ScalingBenchReport(MachineInfo Machine, IReadOnlyList<string> Devices, int Ranks, string Model, long Parameters, int Seq, int Steps,
    string Stash, IReadOnlyList<ScalingBenchResult> Results, string Definition = ScalingBenchmark.Definition, bool ShardOptimizer = false)
{
    /// <summary>Indented JSON.</summary>
    public string ToJson() => BenchmarkJson.Serialize(this);
}

/// <summary>
/// Data-parallel scaling of the relay: each configuration is trained on one device alone, then on every device of every
/// rank with the same micro-batches per device (so the global batch grows with the device count: weak scaling).
/// </summary>
public static class ScalingBenchmark
{
    /// <summary>The efficiency's definition, recorded in the report.</summary>
    public const string Definition = "scaling efficiency = tokens/s with N devices ÷ (N × tokens/s with 1), N = devices per rank × ranks, same micro-batches per device";

    /// <summary>The options of one configuration: <paramref name="perDevice"/> micro-batches of <paramref name="microBatchSize"/> on each of devices × ranks.</summary>
    public static TrainOptions Options(IModelConfig config, int microBatchSize, int perDevice, int seq, int steps, int devices, int ranks, StashPlacement stash,
        bool shardOptimizer = false) => new()
    {
        Config = config,
        Steps = steps,
        Batch = perDevice * devices * ranks * microBatchSize,
        MicroBatches = perDevice * devices * ranks,
        SeqLen = seq,
        Optimizer = new OptimizerSettings(OptimizerKind.AdamW, 1e-4f),
        Executor = ExecutorKind.Relay,
        Stash = stash,
        Devices = devices,
        WorldSize = ranks,
        ShardOptimizer = shardOptimizer,
    };

    /// <summary>Median metrics of the measured steps of one run: tokens/s, collective seconds, hidden collective seconds.</summary>
    public static (double TokensPerSecond, double CollectiveSeconds, double HiddenSeconds) Measure(Backend first, TrainOptions options, int warmup, Parallel.ParallelSetup? parallel)
    {
        using var trainer = new Trainer(first, options, new SyntheticCorpus(Math.Min(256, options.Config.VocabSize)), parallel: parallel);
        var measured = trainer.Run().Skip(warmup).ToList();
        return (Median(measured.Select(m => m.TokensPerSecond)), Median(measured.Select(m => m.CollectiveSeconds)), Median(measured.Select(m => m.CollectiveHiddenSeconds)));
    }

    /// <summary>Runs every size × count on one device (<paramref name="single"/>, null to leave the single-device figure out), returning tokens/s per configuration.</summary>
    public static Dictionary<(int, int), double> Single(Backend? single, IModelConfig config, IReadOnlyList<int> microBatchSizes, int seq,
        IReadOnlyList<int> perDevice, int steps, int warmup, StashPlacement stash, Action<string>? log = null)
    {
        var result = new Dictionary<(int, int), double>();
        if (single is null) return result;
        foreach (var m in microBatchSizes)
        foreach (var u in perDevice)
        {
            try
            {
                result[(m, u)] = Measure(single, Options(config, m, u, seq, warmup + steps, 1, 1, stash), warmup, null).TokensPerSecond;
                log?.Invoke($"M={m,-3} U={u,-3} 1 device: {result[(m, u)],10:F0} tok/s");
            }
            catch (DeviceOutOfMemoryException e)
            {
                log?.Invoke($"M={m,-3} U={u,-3} 1 device does not fit: {e.Message}");
            }
        }
        return result;
    }

    /// <summary>Runs every size × count on all of <paramref name="parallel"/>'s devices and ranks (sharded as it says), against the single-device figures.</summary>
    public static ScalingBenchReport Run(Parallel.ParallelSetup parallel, string modelName, IModelConfig config, IReadOnlyList<int> microBatchSizes, int seq,
        IReadOnlyList<int> perDevice, int steps, int warmup, StashPlacement stash, IReadOnlyDictionary<(int, int), double> single, Action<string>? log = null)
    {
        var results = new List<ScalingBenchResult>();
        int d = parallel.DeviceCount, r = parallel.WorldSize, n = d * r;
        foreach (var m in microBatchSizes)
        foreach (var u in perDevice)
        {
            var options = Options(config, m, u, seq, warmup + steps, d, r, stash, parallel.ShardOptimizer);
            var one = single.TryGetValue((m, u), out var t) ? t : 0;
            try
            {
                var (tps, collective, hidden) = Measure(parallel.Devices[0], options, warmup, parallel);
                var efficiency = one > 0 ? tps / (n * one) : 0;
                results.Add(new ScalingBenchResult(m, u, d, r, one, tps, efficiency, collective, hidden, null));
                log?.Invoke($"M={m,-3} U={u,-3} {r} rank(s) x {d} device(s): {tps,10:F0} tok/s  efficiency {efficiency:P1}  collectives {collective:F4} s/step ({hidden:F4} s hidden)");
            }
            catch (DeviceOutOfMemoryException e)
            {
                results.Add(new ScalingBenchResult(m, u, d, r, one, 0, 0, 0, 0, e.Message));
                log?.Invoke($"M={m,-3} U={u,-3} {r} rank(s) x {d} device(s) does not fit: {e.Message}");
            }
        }
        return new ScalingBenchReport(MachineInfo.Current(), parallel.Devices.Select(b => b.Description).ToList(), r, modelName, config.ParameterCount, seq, steps,
            stash.ToString().ToLowerInvariant(), results, ShardOptimizer: parallel.ShardOptimizer);
    }

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.OrderBy(v => v).ToArray();
        if (sorted.Length == 0) return 0;
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }
}
