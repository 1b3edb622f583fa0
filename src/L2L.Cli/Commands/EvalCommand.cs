// `l2l eval`: mean cross-entropy of a checkpoint on a token file, printed as one JSON object.
using System.CommandLine;
using System.Text.Json;
using L2L.Backends;
using L2L.Model;
using L2L.Model.Data;
using L2L.Training;

namespace L2L.Cli.Commands;

internal static class EvalCommand
{
    public static Command Create()
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "Checkpoint directory (config.json + model.safetensors).", Required = true };
        var data = new Option<string?>("--data") { Description = "Token file (llm.c .bin or bytes). Default: the built-in synthetic corpus." };
        var labels = new Option<string?>("--labels") { Description = "BERT: llm.c .bin of targets aligned with --data (65535 = not scored). Default: mask on the fly as training does." };
        var seed = new Option<int>("--seed") { Description = "BERT: the masking seed (as train's --seed).", DefaultValueFactory = _ => 1337 };
        var batch = new Option<int>("--batch") { Description = "Sequences per batch (B).", DefaultValueFactory = _ => 8 };
        var seq = new Option<int>("--seq") { Description = "Tokens per sequence (T).", DefaultValueFactory = _ => 64 };
        var batches = new Option<int>("--batches") { Description = "Batches to evaluate (N); batch i is the window set of training step i.", DefaultValueFactory = _ => 10 };
        var device = new Option<string?>("--device") { Description = $"auto, cpu, cuda[:i] or opencl[:i] (default: {DeviceSpec.EnvironmentVariable} or auto)." };
        var command = new Command("eval", "Evaluate a checkpoint's mean cross-entropy over the labelled positions of N*B windows (every token for GPT-2); prints one JSON object.");
        foreach (var o in new Option[] { checkpoint, data, labels, seed, batch, seq, batches, device })
            command.Options.Add(o);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            var (cfg, weights) = Checkpoint.Load(parse.GetValue(checkpoint)!);
            var source = DataSources.Open(parse.GetValue(data), cfg.VocabSize);
            var labelSource = parse.GetValue(labels) is { } labelsPath ? MlmBatchLoader.OpenLabels(labelsPath) : null;
            var batchSource = BatchSources.ForEvaluation(cfg, source, labelSource, parse.GetValue(batch), parse.GetValue(seq), parse.GetValue(seed));
            using var backend = Backend.Create(DeviceSpec.Resolve(parse.GetValue(device)));
            using var evaluator = new Evaluator(backend, new ModelLayout(cfg), weights, parse.GetValue(batch), parse.GetValue(seq));
            var result = evaluator.Evaluate(batchSource, parse.GetValue(batches));
            Console.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["loss"] = result.Loss,
                ["tokens"] = result.Tokens,
                ["batches"] = result.Batches,
                ["data"] = source.Description,
                ["device"] = backend.Description,
            }));
            return 0;
        }));
        return command;
    }
}
