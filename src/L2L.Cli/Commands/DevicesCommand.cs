// `l2l devices`: every accelerator found, and which one auto picks.
using System.CommandLine;
using L2L.Backends;
using Spectre.Console;

namespace L2L.Cli.Commands;

internal static class DevicesCommand
{
    public static Command Create(CliEnvironment env)
    {
        var command = new Command("devices", "List every accelerator found (kind, name, memory, warp size, max group size) and which one 'auto' picks.");
        command.SetAction(_ =>
        {
            var devices = DeviceCatalog.List();
            var auto = DeviceCatalog.AutoKind(devices);
            var table = new Table().AddColumns("device", "name", "memory", "warp", "max group", "multiprocessors", "auto");
            var autoMarked = false;
            foreach (var d in devices)
            {
                var isAuto = !autoMarked && d.Kind == auto;
                autoMarked |= isAuto;
                table.AddRow(
                    $"{d.Kind.ToString().ToLowerInvariant()}:{d.Index}",
                    Markup.Escape(d.Name),
                    MemoryTracker.Format(d.MemoryBytes),
                    d.WarpSize.ToString(),
                    d.MaxGroupSize.ToString(),
                    d.Multiprocessors.ToString(),
                    isAuto ? "*" : "");
            }
            env.Ansi.Write(table);
            env.Ansi.WriteLine($"auto picks {auto.ToString().ToLowerInvariant()}:0 (override with --device or {DeviceSpec.EnvironmentVariable}=cpu|cuda|opencl[:index])");
            return 0;
        });
        return command;
    }
}
