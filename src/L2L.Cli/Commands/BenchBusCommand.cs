// `l2l bench bus`: host-to-device and device-to-host bandwidth through pinned memory on the copy stream.
using System.CommandLine;
using L2L.Backends;
using L2L.Cli.Validation;
using L2L.Training.Benchmarks;

namespace L2L.Cli.Commands;

internal static class BenchBusCommand
{
    public static Command Create()
    {
        var mib = new Option<int>("--mib") { Description = "MiB per transfer.", DefaultValueFactory = _ => 256 };
        var repeats = new Option<int>("--repeats") { Description = "Timed transfers each way (best kept).", DefaultValueFactory = _ => 5 };
        var device = new Option<string?>("--device") { Description = "auto, cpu, cuda[:i] or opencl[:i]." };
        var json = new Option<bool>("--json") { Description = "Print the report as JSON." };
        var output = new Option<string?>("--out") { Description = "Also write the JSON report to this file." };
        var command = new Command("bus", "Host-to-device and device-to-host bandwidth of pinned transfers on the copy stream.");
        foreach (var o in new Option[] { mib, repeats, device, json, output })
            command.Options.Add(o);
        var rules = new RuleTable
        {
            Rules.AtLeast(mib, 1),
            Rules.AtLeast(repeats, 1),
            Rules.Device(device),
            Rules.OutputFile(output, "the JSON report"),
        };
        command.SetAction(parse =>
        {
            rules.Check(parse);
            if (parse.GetValue(mib) < 1) throw new ArgumentException("--mib must be at least 1.");
            using var backend = Backend.Create(DeviceSpec.Resolve(parse.GetValue(device)));
            var report = BusBenchmark.Run(backend, (long)parse.GetValue(mib) << 20, Math.Max(1, parse.GetValue(repeats)));
            var quiet = parse.GetValue(json);
            if (!quiet)
                Console.WriteLine($"{backend.Description}: host->device {report.HostToDeviceBytesPerS / 1e9:F2} GB/s, device->host {report.DeviceToHostBytesPerS / 1e9:F2} GB/s ({MemoryTracker.Format(report.Bytes)} per transfer)");
            BenchOutput.Write(report.ToJson(), quiet, parse.GetValue(output));
            return 0;
        });
        return command;
    }
}
