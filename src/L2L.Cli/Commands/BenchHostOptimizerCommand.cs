// `l2l bench host-optimizer`: host optimizer update rate against the machine's STREAM triad bandwidth.
using System.CommandLine;
using L2L.Training.Benchmarks;
using Spectre.Console;

namespace L2L.Cli.Commands;

internal static class BenchHostOptimizerCommand
{
    public static Command Create()
    {
        var command = new Command("host-optimizer",
            "Measure SGD, AdamW and LAMB updates (FP32 and FP16 gradients, FP16 copy-out) in params/s and bytes/s against a STREAM triad on the same threads.");
        var paramsOption = new Option<int>("--params")
        {
            Description = "Parameters in the updated slice; keep every array far larger than the last-level cache.",
            DefaultValueFactory = _ => HostOptimizerBenchmark.DefaultParams,
        };
        var threadsOption = new Option<int>("--threads")
        {
            Description = "Threads per update and for the triad (default: all logical processors).",
            DefaultValueFactory = _ => Environment.ProcessorCount,
        };
        var repeatsOption = new Option<int>("--repeats")
        {
            Description = "Timed repetitions per measurement; the best counts.",
            DefaultValueFactory = _ => 5,
        };
        var jsonOption = new Option<bool>("--json") { Description = "Print the result as JSON instead of a table." };
        var outOption = new Option<FileInfo?>("--out") { Description = "Also write the JSON result to this file (e.g. bench/results/host-optimizer-<machine>.json)." };
        command.Options.Add(paramsOption);
        command.Options.Add(threadsOption);
        command.Options.Add(repeatsOption);
        command.Options.Add(jsonOption);
        command.Options.Add(outOption);
        command.SetAction(parseResult =>
        {
            var parameters = parseResult.GetValue(paramsOption);
            var threads = parseResult.GetValue(threadsOption);
            var repeats = parseResult.GetValue(repeatsOption);
            if (parameters < 1 || threads < 1 || repeats < 1)
            {
                Console.Error.WriteLine("--params, --threads and --repeats must be at least 1.");
                return 1;
            }
            var json = parseResult.GetValue(jsonOption);
            var report = HostOptimizerBenchmark.Run(parameters, threads, repeats, line => Console.Error.WriteLine(line));
            var text = report.ToJson();
            if (parseResult.GetValue(outOption) is { } file)
            {
                file.Directory?.Create();
                File.WriteAllText(file.FullName, text + Environment.NewLine);
            }
            if (json)
            {
                Console.WriteLine(text);
                return 0;
            }
            var m = report.Machine;
            AnsiConsole.WriteLine($"{m.Cpu}, {m.Cores} logical processors, {m.Os}, {m.Dotnet}, Vector<T> {m.VectorBits} bits");
            AnsiConsole.WriteLine($"{report.Params:N0} params, {report.Threads} threads, best of {report.Repeats}; STREAM triad {report.TriadBytesPerS / 1e9:F2} GB/s" +
                (report.LoadAverage is { } load ? $"; load average {load:F2} at start" : ""));
            var table = new Table().AddColumns("optimizer", "grads", "bytes/param", "M params/s", "GB/s", "of triad", "triad after (GB/s)", "alloc B/step");
            foreach (var r in report.Results)
            {
                table.AddRow(r.Optimizer, r.GradDtype, r.BytesPerParam.ToString(), (r.ParamsPerS / 1e6).ToString("F0"),
                    (r.BytesPerS / 1e9).ToString("F2"), r.Ratio.ToString("F2"), (r.NearbyTriadBytesPerS / 1e9).ToString("F2"),
                    r.AllocatedBytesPerStep.ToString("F0"));
            }
            AnsiConsole.Write(table);
            return 0;
        });
        return command;
    }
}
