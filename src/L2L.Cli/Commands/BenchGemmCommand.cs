// `l2l bench gemm`: FP32 matrix products of the engine against cuBLAS (on CUDA) on squares and GPT-2 layer shapes.
using System.CommandLine;
using L2L.Backends;
using L2L.Cli.Validation;
using L2L.Model;
using L2L.Training.Benchmarks;

namespace L2L.Cli.Commands;

internal static class BenchGemmCommand
{
    public static Command Create()
    {
        var sizes = new Option<string?>("--sizes") { Description = "Comma-separated square sizes (default: 1024,2048,4096,8192 on a GPU, 128,256 on the CPU accelerator)." };
        var model = new Option<string>("--model") { Description = "Preset whose layer shapes to measure.", DefaultValueFactory = _ => "gpt2" };
        var tokens = new Option<int?>("--tokens") { Description = "Tokens per product for the layer shapes (default: 8192 on a GPU, 256 on the CPU accelerator)." };
        var repeats = new Option<int>("--repeats") { Description = "Timed repeats per shape (best kept).", DefaultValueFactory = _ => 5 };
        var device = new Option<string?>("--device") { Description = "auto, cpu, cuda[:i] or opencl[:i]." };
        var json = new Option<bool>("--json") { Description = "Print the report as JSON." };
        var output = new Option<string?>("--out") { Description = "Also write the JSON report to this file." };
        var command = new Command("gemm", "FP32 GEMM throughput of the engine's kernels, beside cuBLAS SGEMM when the device is CUDA.");
        foreach (var o in new Option[] { sizes, model, tokens, repeats, device, json, output })
            command.Options.Add(o);
        var rules = new RuleTable
        {
            Rules.OneOf(model, GptConfig.PresetNames, "model preset"),
            Rules.AtLeast(tokens, 1),
            Rules.AtLeast(repeats, 1),
            Rules.Device(device),
            Rules.OutputFile(output, "the JSON report"),
        };
        command.SetAction(parse =>
        {
            rules.Check(parse);
            using var backend = Backend.Create(DeviceSpec.Resolve(parse.GetValue(device)));
            var cpu = backend.Kind == DeviceKind.Cpu;
            var squares = (parse.GetValue(sizes) ?? (cpu ? "128,256" : "1024,2048,4096,8192"))
                .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(t => int.TryParse(t, out var v) && v > 0 ? v : throw new ArgumentException($"--sizes: '{t}' is not a positive integer."));
            var config = GptConfig.Preset(parse.GetValue(model)!);
            var n = parse.GetValue(tokens) ?? (cpu ? 256 : 8192);
            var shapes = squares.Select(s => ($"square {s}", Backends.Ops.GemmLayout.NN, s, s, s))
                .Concat(GemmBenchmark.LayerShapes(n, config.Channels).Select(x => ($"{parse.GetValue(model)} {x.Name}", x.Layout, x.M, x.N, x.K)));
            var quiet = parse.GetValue(json);
            var report = GemmBenchmark.Run(backend, shapes, parse.GetValue(repeats), quiet ? null : Console.WriteLine);
            BenchOutput.Write(report.ToJson(), quiet, parse.GetValue(output));
            return 0;
        });
        return command;
    }
}
