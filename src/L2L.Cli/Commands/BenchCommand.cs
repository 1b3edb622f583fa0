// `l2l bench ...`: benchmarks whose results are saved with the machine they ran on.
using System.CommandLine;

namespace L2L.Cli.Commands;

internal static class BenchCommand
{
    public static Command Create(CliEnvironment? env = null)
    {
        var command = new Command("bench", "Benchmarks (results carry the machine they ran on).");
        command.Subcommands.Add(BenchHostOptimizerCommand.Create());
        command.Subcommands.Add(BenchTrainCommand.Create(env?.Variables));
        command.Subcommands.Add(BenchGemmCommand.Create());
        command.Subcommands.Add(BenchBusCommand.Create());
        command.Subcommands.Add(BenchAttentionCommand.Create());
        return command;
    }
}
