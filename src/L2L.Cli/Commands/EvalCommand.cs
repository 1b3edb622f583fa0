// `l2l eval`: mean cross-entropy of a checkpoint on a token file, printed as one JSON object.
using System.CommandLine;
using System.Text.Json;
using L2L.Backends;
using L2L.Model;
using L2L.Training;

namespace L2L.Cli.Commands;

internal static class EvalCommand
{
    public static Command Create()
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "Checkpoint directory (config.json + model.safetensors).", Required = true };
        var data = new Option<string?>("--data") { Description = "Token file (llm.c .bin or bytes). Default: the built-in synthetic corpus." };
        var batch = new Option<int>("--batch") { Description = "Sequences per batch (B).", DefaultValueFactory = _ => 8 };
        var seq = new Option<int>("--seq") { Description = "Tokens per sequence (T).", DefaultValueFactory = _ => 64 };
        var batches = new Option<int>("--batches") { Description = "Batches to evaluate (N); batch i is the window set of training step i.", DefaultValueFactory = _ => 10 };
        var device = new Option<string?>("--device") { Description = $"auto, cpu, cuda[:i] or opencl[:i] (default: {DeviceSpec.EnvironmentVariable} or auto)." };
        var command = new Command("eval", "Evaluate a checkpoint's mean cross-entropy over N*B windows; prints one JSON object.");
        foreach (var o in new Option[] { checkpoint, data, batch, seq, batches, device })
            command.Options.Add(o);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            var (cfg, weights) = Checkpoint.Load(parse.GetValue(checkpoint)!);
            var source = DataSources.Open(parse.GetValue(data), cfg.VocabSize);
            using var backend = Backend.Create(DeviceSpec.Resolve(parse.GetValue(device)));
            using var evaluator = new Evaluator(backend, new ModelLayout(cfg), weights, parse.GetValue(batch), parse.GetValue(seq));
            var result = evaluator.Evaluate(source, parse.GetValue(batches));
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
