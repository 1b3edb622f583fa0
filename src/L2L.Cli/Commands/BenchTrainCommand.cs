// `l2l bench train`: relay (device and host stash) against conventional training over micro-batch counts.
using System.CommandLine;
using L2L.Backends;
using L2L.Cli.Validation;
using L2L.Model;
using L2L.Training.Benchmarks;

namespace L2L.Cli.Commands;

internal static class BenchTrainCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model preset (gpt2-*, bert-*).", DefaultValueFactory = _ => "gpt2-tiny" };
        var config = new Option<string?>("--config") { Description = "A config.json instead of a preset." };
        var microBatchSize = new Option<string>("--micro-batch-size") { Description = "Comma-separated sequences per micro-batch (each fixed while U varies; an executor that does not fit one is not tried at larger ones).", DefaultValueFactory = _ => "2" };
        var seq = new Option<int>("--seq") { Description = "Tokens per sequence.", DefaultValueFactory = _ => 64 };
        var counts = new Option<string>("--micro-batches") { Description = "Comma-separated micro-batch counts U to measure.", DefaultValueFactory = _ => "1,2,4" };
        var steps = new Option<int>("--steps") { Description = "Measured steps per configuration (median reported).", DefaultValueFactory = _ => 3 };
        var warmup = new Option<int>("--warmup") { Description = "Unmeasured steps first (kernel compilation, caches).", DefaultValueFactory = _ => 1 };
        var device = new Option<string?>("--device") { Description = "auto, cpu, cuda[:i] or opencl[:i]." };
        var json = new Option<bool>("--json") { Description = "Print the report as JSON." };
        var budget = new Option<double?>("--budget-s") { Description = "Report configurations not started within this many seconds as skipped." };
        var output = new Option<string?>("--out") { Description = "Also write the JSON report to this file (e.g. bench/results/train-<machine>.json)." };
        var (stashCodec, stashGroup) = StashCodecOptions.Create();
        var (stashBudget, stashEvery) = StashCodecOptions.CreateAdaptive();
        var command = new Command("train", "Tokens/s, device peak bytes, bus bytes and transfer-wait fraction: relay (device and host stash) vs conventional.");
        foreach (var o in new Option[] { model, config, microBatchSize, seq, counts, steps, warmup, device, budget, json, output })
            command.Options.Add(o);
        command.Options.Add(stashCodec);
        command.Options.Add(stashGroup);
        command.Options.Add(stashBudget);
        command.Options.Add(stashEvery);
        var rules = new RuleTable
        {
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
        command.SetAction(parse =>
        {
            rules.Check(parse);
            var name = parse.GetValue(config) is { } path ? Path.GetFileName(path) : parse.GetValue(model)!;
            var cfg = parse.GetValue(config) is { } p ? ModelConfigs.Load(p) : ModelConfigs.Preset(parse.GetValue(model)!);
            var us = PositiveList(parse.GetValue(counts)!, "--micro-batches");
            var ms = PositiveList(parse.GetValue(microBatchSize)!, "--micro-batch-size");
            using var backend = Backend.Create(DeviceSpec.Resolve(parse.GetValue(device)));
            var quiet = parse.GetValue(json);
            var report = TrainBenchmark.Run(backend, name, cfg, ms, parse.GetValue(seq), us,
                parse.GetValue(steps), parse.GetValue(warmup), quiet ? null : Console.WriteLine, parse.GetValue(budget),
                StashCodecOptions.Settings(parse, stashCodec, stashGroup, stashBudget, stashEvery));
            BenchOutput.Write(report.ToJson(), quiet, parse.GetValue(output));
            return 0;
        });
        return command;
    }

    private static List<int> PositiveList(string text, string option) =>
        text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(t => int.TryParse(t, out var v) && v > 0 ? v : throw new ArgumentException($"{option}: '{t}' is not a positive integer.")).ToList();
}
