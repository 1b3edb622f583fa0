// `l2l bench train`: relay (device and host stash) against conventional training over micro-batch counts.
using System.CommandLine;
using L2L.Backends;
using L2L.Cli.Validation;
using L2L.Model;
using L2L.Training;
using L2L.Training.Benchmarks;

namespace L2L.Cli.Commands;

internal static class BenchTrainCommand
{
    public static Command Create(Func<string, string?>? variables = null)
    {
        var model = new Option<string>("--model") { Description = "Model preset (gpt2-*, bert-*).", DefaultValueFactory = _ => "gpt2-tiny" };
        var config = new Option<string?>("--config") { Description = "A config.json instead of a preset." };
        var microBatchSize = new Option<string>("--micro-batch-size") { Description = "Comma-separated sequences per micro-batch (each fixed while U varies; an executor that does not fit one is not tried at larger ones).", DefaultValueFactory = _ => "2" };
        var seq = new Option<int>("--seq") { Description = "Tokens per sequence.", DefaultValueFactory = _ => 64 };
        var counts = new Option<string>("--micro-batches") { Description = "Comma-separated micro-batch counts U to measure (with several devices or ranks: per device).", DefaultValueFactory = _ => "1,2,4" };
        var steps = new Option<int>("--steps") { Description = "Measured steps per configuration (median reported).", DefaultValueFactory = _ => 3 };
        var warmup = new Option<int>("--warmup") { Description = "Unmeasured steps first (kernel compilation, caches).", DefaultValueFactory = _ => 1 };
        var device = new Option<string?>("--device") { Description = "auto, cpu, cuda[:i] or opencl[:i]." };
        var json = new Option<bool>("--json") { Description = "Print the report as JSON." };
        var budget = new Option<double?>("--budget-s") { Description = "Report configurations not started within this many seconds as skipped." };
        var output = new Option<string?>("--out") { Description = "Also write the JSON report to this file (e.g. bench/results/train-<machine>.json)." };
        var (stashCodec, stashGroup) = StashCodecOptions.Create();
        var parallel = new DataParallelOptions { Environment = variables ?? Environment.GetEnvironmentVariable };
        var (stashBudget, stashEvery) = StashCodecOptions.CreateAdaptive();
        var precisions = new Option<string>("--precision") { Description = "Comma-separated device precisions to measure: fp32, bf16, fp16 (see train --precision).", DefaultValueFactory = _ => "fp32" };
        var executors = new Option<string>("--executors") { Description = "Comma-separated configurations to measure: conventional, relay-device, relay-host.", DefaultValueFactory = _ => "conventional,relay-device,relay-host" };
        var command = new Command("train", "Tokens/s, device peak bytes, bus bytes and transfer-wait fraction: relay (device and host stash) vs conventional.");
        foreach (var o in new Option[] { model, config, microBatchSize, seq, counts, steps, warmup, device, budget, json, output })
            command.Options.Add(o);
        command.Options.Add(stashCodec);
        command.Options.Add(stashGroup);
        foreach (var o in parallel.All)
            command.Options.Add(o);
        command.Options.Add(stashBudget);
        command.Options.Add(stashEvery);
        command.Options.Add(precisions);
        command.Options.Add(executors);
        var rules = new RuleTable
        {
            Rules.Custom("--precision lists precisions", p => p.GetValue(precisions)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                is { Length: > 0 } names && names.All(t => Precisions.TryParse(t) is not null) ? null
                : $"--precision '{p.GetValue(precisions)}' is not a comma-separated list of precisions. Give some of: {string.Join(", ", PrecisionOption.Names)}"),
            Rules.Custom("--executors lists configurations", p => p.GetValue(executors)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                is { Length: > 0 } names && names.All(t => ExecutorNames.ContainsKey(t)) ? null
                : $"--executors '{p.GetValue(executors)}' is not a comma-separated list of configurations. Give some of: {string.Join(", ", ExecutorNames.Keys)}"),
            StashCodecOptions.CodecRule(stashCodec),
            StashCodecOptions.GroupRule(stashGroup),
            StashCodecOptions.AdaptiveRules(stashBudget, stashEvery, p => p.GetValue(stashCodec)!),
            Rules.OneOf(model, ModelConfigs.PresetNames, "model preset"),
            Rules.InputFile(config, "give the path of a Hugging Face config.json (GPT-2 or BERT)"),
            Rules.Custom("--micro-batch-size lists positive integers", p => p.GetValue(microBatchSize)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .All(t => int.TryParse(t, out var v) && v > 0) ? null
                : $"--micro-batch-size '{p.GetValue(microBatchSize)}' is not a comma-separated list of positive integers. Give e.g. --micro-batch-size 2,4"),
            Rules.AtLeast(seq, 1),
            Rules.AtLeast(steps, 1),
            Rules.AtLeast(warmup, 0),
            Rules.Device(device),
            Rules.OutputFile(output, "the JSON report"),
        };
        foreach (var rule in parallel.Rules(device, microBatches: null, relay: null))
            rules.Add(rule);
        command.SetAction(parse =>
        {
            rules.Check(parse);
            var name = parse.GetValue(config) is { } path ? Path.GetFileName(path) : parse.GetValue(model)!;
            var cfg = parse.GetValue(config) is { } p ? ModelConfigs.Load(p) : ModelConfigs.Preset(parse.GetValue(model)!);
            var us = PositiveList(parse.GetValue(counts)!, "--micro-batches");
            var ms = PositiveList(parse.GetValue(microBatchSize)!, "--micro-batch-size");
            var plan = parallel.Plan(parse);
            var devices = parallel.DeviceList(parse, device);
            if (devices.Count > 1 || plan.Distributed)
                return Scaling(parse, plan, devices.ForLocalRank(plan.LocalRank), name, cfg, ms, us);
            using var backend = Backend.Create(DeviceSpec.Resolve(parse.GetValue(device)));
            var quiet = parse.GetValue(json);
            var report = TrainBenchmark.Run(backend, name, cfg, ms, parse.GetValue(seq), us,
                parse.GetValue(steps), parse.GetValue(warmup), quiet ? null : Console.WriteLine, parse.GetValue(budget),
                StashCodecOptions.Settings(parse, stashCodec, stashGroup, stashBudget, stashEvery),
                parse.GetValue(precisions)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(t => Precisions.TryParse(t)!.Value).Distinct().ToList(),
                parse.GetValue(executors)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(t => ExecutorNames[t]).Distinct().ToList());
            BenchOutput.Write(report.ToJson(), quiet, parse.GetValue(output));
            return 0;
        });
        return command;

        // Relay data parallel against one device: the single-device runs happen first, on rank 0 alone and before MPI
        // starts (the other ranks wait in MPI_Init), so they have the machine to themselves.
        int Scaling(ParseResult parse, LaunchPlan plan, IReadOnlyList<DeviceSpec> specs, string name, IModelConfig cfg, List<int> ms, List<int> us)
        {
            var quiet = parse.GetValue(json) || !plan.Writes;
            Action<string>? log = quiet ? null : Console.WriteLine;
            int seqLen = parse.GetValue(seq), measured = parse.GetValue(steps), unmeasured = parse.GetValue(warmup);
            Dictionary<(int, int), double> single;
            using (var first = plan.Writes ? Backend.Create(specs[0]) : null)
                single = ScalingBenchmark.Single(first, cfg, ms, seqLen, us, measured, unmeasured, StashPlacement.Device, log);
            using var collectives = plan.Start();
            var leases = new List<Backend>();
            try
            {
                foreach (var spec in specs) leases.Add(Backend.Create(spec));
                var setup = new L2L.Training.Parallel.ParallelSetup(leases, collectives, parse.GetValue(parallel.ShardOptimizer));
                var report = ScalingBenchmark.Run(setup, name, cfg, ms, seqLen, us, measured, unmeasured, StashPlacement.Device, single, log);
                if (plan.Writes) BenchOutput.Write(report.ToJson(), parse.GetValue(json), parse.GetValue(output));
                return 0;
            }
            catch (Exception e) when (collectives.WorldSize > 1)
            {
                collectives.Abort(1, $"error: rank {collectives.Rank} of {collectives.WorldSize}: {Cli.OneLine(e.Message)} Ending every rank.");
                return 1;
            }
            finally
            {
                foreach (var b in leases) b.Dispose();
            }
        }
    }

    private static readonly Dictionary<string, (ExecutorKind, StashPlacement?)> ExecutorNames = new(StringComparer.OrdinalIgnoreCase)
    {
        ["conventional"] = (ExecutorKind.Conventional, null),
        ["relay-device"] = (ExecutorKind.Relay, StashPlacement.Device),
        ["relay-host"] = (ExecutorKind.Relay, StashPlacement.Host),
    };

    private static List<int> PositiveList(string text, string option) =>
        text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(t => int.TryParse(t, out var v) && v > 0 ? v : throw new ArgumentException($"{option}: '{t}' is not a positive integer.")).ToList();
}
