// The l2l command line as a callable function: parse, validate, run, and turn every failure into one line.
using System.CommandLine;
using System.Text.RegularExpressions;
using L2L.Backends;
using L2L.Cli.Commands;
using L2L.Cli.Validation;
using L2L.Training;
using Spectre.Console;

namespace L2L.Cli;

/// <summary>What a command runs with: where it writes, how it is stopped, how it gets a backend.</summary>
public sealed class CliEnvironment
{
    private int _backends;

    /// <summary>Signalled to stop training gracefully after the current step (the first SIGINT/SIGTERM).</summary>
    public CancellationToken Stop { get; init; }

    /// <summary>When set, commands run on this backend and leave it open, instead of creating (and disposing) their own.</summary>
    public Backend? Backend { get; init; }

    /// <summary>How many times a command asked for a backend: zero means it stopped before touching any device.</summary>
    public int BackendRequests => _backends;

    /// <summary>Standard output.</summary>
    public TextWriter Out { get; internal set; } = Console.Out;

    /// <summary>Standard error.</summary>
    public TextWriter Error { get; internal set; } = Console.Error;

    /// <summary>Rich console over <see cref="Out"/> (progress bars only when it is a terminal).</summary>
    internal IAnsiConsole Ansi { get; set; } = AnsiConsole.Console;

    /// <summary>The arguments as typed (for the resume hint).</summary>
    internal IReadOnlyList<string> Args { get; set; } = [];

    /// <summary>Looks an environment variable up (null when unset): the process's own unless a test gives another.</summary>
    public Func<string, string?> Variables { get; init; } = Environment.GetEnvironmentVariable;

    /// <summary>Opens the backend for <paramref name="spec"/>; dispose the lease when done.</summary>
    internal BackendLease OpenBackend(DeviceSpec spec)
    {
        Interlocked.Increment(ref _backends);
        return Backend is { } shared ? new BackendLease(shared, owned: false) : new BackendLease(Backends.Backend.Create(spec), owned: true);
    }

    /// <summary>Opens one backend per spec (a shared <see cref="Backend"/> stands for the first only: the others are real accelerators of their own).</summary>
    internal BackendLeases OpenBackends(IReadOnlyList<DeviceSpec> specs)
    {
        var leases = new BackendLeases();
        try
        {
            for (var i = 0; i < specs.Count; i++)
            {
                Interlocked.Increment(ref _backends);
                leases.Add(i == 0 && Backend is { } shared ? new BackendLease(shared, owned: false) : new BackendLease(Backends.Backend.Create(specs[i]), owned: true));
            }
            return leases;
        }
        catch
        {
            leases.Dispose();
            throw;
        }
    }

    /// <summary>Sends standard output nowhere (an MPI rank other than 0: rank 0 reports for the job); errors still go to <see cref="Error"/>.</summary>
    internal void Silence()
    {
        Out = TextWriter.Null;
        Ansi = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(TextWriter.Null),
            Ansi = AnsiSupport.No,
            ColorSystem = ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.No,
        });
    }
}

/// <summary>The backends of a data-parallel run, disposed together.</summary>
internal sealed class BackendLeases : IDisposable
{
    private readonly List<BackendLease> _leases = [];

    public IReadOnlyList<Backend> Backends => _leases.Select(l => l.Backend).ToList();

    public void Add(BackendLease lease) => _leases.Add(lease);

    public void Dispose()
    {
        for (var i = _leases.Count - 1; i >= 0; i--) _leases[i].Dispose();
        _leases.Clear();
    }
}

/// <summary>A backend a command uses, disposed with the lease only when the command created it.</summary>
internal sealed class BackendLease(Backend backend, bool owned) : IDisposable
{
    public Backend Backend { get; } = backend;

    public void Dispose()
    {
        if (owned) Backend.Dispose();
    }
}

/// <summary>The l2l entry point, callable in process.</summary>
public static partial class Cli
{
    /// <summary>Exit code of a run stopped by an interrupt (128 + SIGINT).</summary>
    public const int InterruptedExitCode = 130;

    /// <summary>
    /// Runs the command line <paramref name="args"/>, writing to <paramref name="stdout"/> and
    /// <paramref name="stderr"/>, and returns the exit code: 0 done, 1 bad input or a failure (one
    /// <c>error:</c> line), 2 a usage error, 130 stopped by an interrupt.
    /// </summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr, CliEnvironment? environment = null)
    {
        ArgumentNullException.ThrowIfNull(args);
        var env = environment ?? new CliEnvironment();
        env.Out = stdout;
        env.Error = stderr;
        env.Args = args;
        env.Ansi = ReferenceEquals(stdout, Console.Out) ? AnsiConsole.Console : AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(stdout),
            Ansi = AnsiSupport.No,
            ColorSystem = ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.No,
        });

        var verbose = new Option<bool>("--verbose") { Description = "On an unexpected failure, print the full exception after the error line.", Recursive = true };
        var root = new RootCommand("L2L: layer-to-layer relay training of transformer models on CUDA, OpenCL or the CPU accelerator.");
        root.Options.Add(verbose);
        root.Subcommands.Add(TrainCommand.Create(env));
        root.Subcommands.Add(EvalCommand.Create(env));
        root.Subcommands.Add(PrepareCommand.Create());
        root.Subcommands.Add(GenerateCommand.Create());
        root.Subcommands.Add(GrowCommand.Create());
        root.Subcommands.Add(DevicesCommand.Create(env));
        root.Subcommands.Add(PlanCommand.Create(env));
        root.Subcommands.Add(BenchCommand.Create(env));

        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            var names = new List<string>();
            for (var r = parse.CommandResult; r is not null && r.Command != root; r = r.Parent as System.CommandLine.Parsing.CommandResult)
                names.Insert(0, r.Command.Name);
            var command = string.Join(' ', names.Prepend("l2l"));
            stderr.WriteLine($"error: {OneLine(parse.Errors[0].Message)} Run '{command} --help' for the options.");
            return 2;
        }
        try
        {
            return parse.Invoke(new InvocationConfiguration
            {
                Output = stdout,
                Error = stderr,
                EnableDefaultExceptionHandler = false,
                ProcessTerminationTimeout = null, // interrupts are handled by the caller (Program) through env.Stop
            });
        }
        catch (Exception e)
        {
            return Report(e, stderr, parse.GetValue(verbose));
        }
    }

    /// <summary>The top-level handler: one <c>error:</c> line per failure, the trace only with --verbose.</summary>
    internal static int Report(Exception e, TextWriter stderr, bool verbose)
    {
        if (e is System.Reflection.TargetInvocationException { InnerException: { } inner }) e = inner;
        var (line, code) = e switch
        {
            CliException c => (OneLine(c.Message), c.ExitCode),
            _ when IsExpected(e) => (OneLine(e.Message), 1),
            _ => ($"unexpected {e.GetType().Name}: {OneLine(e.Message)} Run with --verbose for details.", 1),
        };
        stderr.WriteLine($"error: {line}");
        if (verbose) stderr.WriteLine(e.ToString());
        return code;
    }

    private static bool IsExpected(Exception e) => e is ArgumentException or InvalidDataException or FileNotFoundException
        or DirectoryNotFoundException or UnauthorizedAccessException or IOException or FormatException or NotSupportedException
        or DeviceNotFoundException or DeviceOutOfMemoryException or NonFiniteLossException;

    /// <summary>A message as one sentence-terminated line: list items joined with ';', .NET's "(Parameter 'x')" and "Actual value was" tails removed.</summary>
    internal static string OneLine(string message)
    {
        var text = ParameterTail().Replace(message, "");
        var parts = text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Where(p => !p.StartsWith("Actual value was", StringComparison.Ordinal))
            .Select(p => p.StartsWith("- ", StringComparison.Ordinal) ? p[2..] : p);
        text = string.Join("; ", parts).Replace(":;", ":", StringComparison.Ordinal).Trim();
        return text.Length == 0 || text[^1] is '.' or '!' or '?' ? text : text + ".";
    }

    [GeneratedRegex(@"\s*\(Parameter '[^']*'\)")]
    private static partial Regex ParameterTail();
}
