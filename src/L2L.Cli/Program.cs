// The l2l process: the first SIGINT/SIGTERM asks training to stop after its current step, a second one aborts at once.
using System.Runtime.InteropServices;
using L2L.Cli;

using var stop = new CancellationTokenSource();
var signals = 0;
void OnSignal(PosixSignalContext context)
{
    context.Cancel = true; // keep running: the command finishes its step, saves and exits 130
    if (Interlocked.Increment(ref signals) == 1)
    {
        Console.Error.WriteLine($"{Environment.NewLine}interrupt: stopping after the current step (interrupt again to abort at once).");
        stop.Cancel();
        return;
    }
    if (!Console.IsOutputRedirected) Console.Out.Write("\u001b[?25h"); // the progress bar hides the cursor
    Console.Error.WriteLine("aborted; the last checkpoint saved before this is intact.");
    Environment.Exit(Cli.InterruptedExitCode);
}
using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
return Cli.Run(args, Console.Out, Console.Error, new CliEnvironment { Stop = stop.Token });
