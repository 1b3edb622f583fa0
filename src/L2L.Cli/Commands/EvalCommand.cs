// `l2l eval`: mean cross-entropy of a checkpoint on a token file, printed as one JSON object.
using System.CommandLine;
using System.Text.Json;
using L2L.Backends;
using L2L.Cli.Validation;
using L2L.Model;
using L2L.Model.Data;
using L2L.Training;

namespace L2L.Cli.Commands;

internal static class EvalCommand
{
    public static Command Create(CliEnvironment env)
    {
        var checkpoint = new Option<string?>("--checkpoint") { Description = "Checkpoint directory (config.json + model.safetensors).", Required = true };
        var data = new Option<string?>("--data") { Description = "Token file (llm.c .bin or bytes). Default: the built-in synthetic corpus." };
        var labels = new Option<string?>("--labels") { Description = "BERT: llm.c .bin of targets aligned with --data (65535 = not scored). Default: mask on the fly as training does." };
        var seed = new Option<int>("--seed") { Description = "BERT: the masking seed (as train's --seed).", DefaultValueFactory = _ => 1337 };
        var batch = new Option<int>("--batch") { Description = "Sequences per batch (B).", DefaultValueFactory = _ => 8 };
        var seq = new Option<int>("--seq") { Description = "Tokens per sequence (T).", DefaultValueFactory = _ => 64 };
        var batches = new Option<int>("--batches") { Description = "Batches to evaluate (N); batch i is the window set of training step i.", DefaultValueFactory = _ => 10 };
        var device = new Option<string?>("--device") { Description = $"auto, cpu, cuda[:i] or opencl[:i] (default: {DeviceSpec.EnvironmentVariable} or auto)." };
        var dataFormat = DataSources.FormatOption();
        var precision = new Option<string>("--precision") { Description = "Device storage for the evaluation: fp32, bf16 or fp16 (default: the precision the checkpoint was trained in, else fp32)." };
        var command = new Command("eval", "Evaluate a checkpoint's mean cross-entropy over the labelled positions of N*B windows (every token for GPT-2); prints one JSON object.");
        foreach (var o in new Option[] { checkpoint, data, dataFormat, labels, seed, batch, seq, batches, device, precision })
            command.Options.Add(o);
        var rules = new RuleTable
        {
            Rules.CheckpointInput(checkpoint, "give a checkpoint directory (config.json and model.safetensors, as written by l2l train --save)"),
            Rules.InputFile(data, DataSources.Expected),
            Rules.InputFile(labels, "give an llm.c .bin file of BERT targets aligned with --data (65535 where a position is not scored)"),
            Rules.OneOf(dataFormat, DataSources.FormatNames, "data format"),
            Rules.AtLeast(batch, 1),
            Rules.AtLeast(seq, 1),
            Rules.AtLeast(batches, 1),
            Rules.Device(device),
            Rules.Custom("--precision names a precision", p => Rules.Given(p, precision) ? PrecisionOption.Rule(precision).Check(p) : null),
        };
        command.SetAction(parse =>
        {
            Checkpoints.Tidy(parse.GetValue(checkpoint), env);
            rules.Check(parse);
            var (cfg, weights) = Checkpoint.Load(parse.GetValue(checkpoint)!);
            var seqLen = parse.GetValue(seq);
            if (seqLen > cfg.MaxPositions)
                throw new CliException($"{Rules.Typed(parse, seq)} {seqLen} is longer than the checkpoint's n_positions ({cfg.MaxPositions}). Use a --seq of at most {cfg.MaxPositions}");
            var source = DataSources.Open(parse.GetValue(data), cfg.VocabSize, parse.GetValue(dataFormat)!, seqLen);
            using var sourceLifetime = source as IDisposable;
            var labelSource = parse.GetValue(labels) is { } labelsPath ? MlmBatchLoader.OpenLabels(labelsPath) : null;
            using var labelLifetime = labelSource as IDisposable;
            var batchSource = BatchSources.ForEvaluation(cfg, source, labelSource, parse.GetValue(batch), seqLen, parse.GetValue(seed));
            using var lease = env.OpenBackend(DeviceSpec.Resolve(parse.GetValue(device)));
            var backend = lease.Backend;
            var storage = Rules.Given(parse, precision) ? PrecisionOption.Parse(parse.GetValue(precision)!) : TrainedPrecision(parse.GetValue(checkpoint)!);
            using var evaluator = new Evaluator(backend, new ModelLayout(cfg), weights, parse.GetValue(batch), seqLen, storage);
            var result = evaluator.Evaluate(batchSource, parse.GetValue(batches));
            env.Out.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["loss"] = result.Loss,
                ["tokens"] = result.Tokens,
                ["batches"] = result.Batches,
                ["data"] = source.Description,
                ["device"] = backend.Description,
                ["precision"] = storage.Name(),
            }));
            return 0;
        });
        return command;
    }

    /// <summary>The precision a checkpoint's run recorded in its training state (fp32 when it has none).</summary>
    private static Precision TrainedPrecision(string dir)
    {
        if (!Checkpoint.HasTrainingState(dir)) return Precision.Fp32;
        using var state = SafeTensorsFile.Open(Path.Combine(dir, Checkpoint.StateFile));
        return state.Metadata.TryGetValue(RunSettings.Precision, out var text) && Precisions.TryParse(text) is { } p ? p : Precision.Fp32;
    }
}
