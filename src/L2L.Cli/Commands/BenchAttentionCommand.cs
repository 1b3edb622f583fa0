// `l2l bench attention`: forward and backward time of the engine's causal attention on a model's shapes.
using System.CommandLine;
using L2L.Backends;
using L2L.Model;
using L2L.Training.Benchmarks;

namespace L2L.Cli.Commands;

internal static class BenchAttentionCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Preset whose channels and heads to use.", DefaultValueFactory = _ => "gpt2" };
        var batch = new Option<int?>("--batch") { Description = "Sequences (default: 8 on a GPU, 1 on the CPU accelerator)." };
        var seq = new Option<int?>("--seq") { Description = "Tokens per sequence (default: 1024 on a GPU, 64 on the CPU accelerator)." };
        var repeats = new Option<int>("--repeats") { Description = "Timed passes (best kept).", DefaultValueFactory = _ => 5 };
        var device = new Option<string?>("--device") { Description = "auto, cpu, cuda[:i] or opencl[:i]." };
        var json = new Option<bool>("--json") { Description = "Print the report as JSON." };
        var output = new Option<string?>("--out") { Description = "Also write the JSON report to this file." };
        var command = new Command("attention", "Causal attention forward and backward milliseconds on a model's head shape.");
        foreach (var o in new Option[] { model, batch, seq, repeats, device, json, output })
            command.Options.Add(o);
        command.SetAction(parse =>
        {
            using var backend = Backend.Create(DeviceSpec.Resolve(parse.GetValue(device)));
            var cpu = backend.Kind == DeviceKind.Cpu;
            var config = GptConfig.Preset(parse.GetValue(model)!);
            var b = parse.GetValue(batch) ?? (cpu ? 1 : 8);
            var t = parse.GetValue(seq) ?? (cpu ? 64 : 1024);
            if (b < 1 || t < 1) throw new ArgumentException("--batch and --seq must be positive.");
            var quiet = parse.GetValue(json);
            var report = AttentionBenchmark.Run(backend, [(b, t, config.Channels, config.Heads)], parse.GetValue(repeats), quiet ? null : Console.WriteLine);
            BenchOutput.Write(report.ToJson(), quiet, parse.GetValue(output));
            return 0;
        });
        return command;
    }
}
