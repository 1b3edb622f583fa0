// Runs the built l2l command line (l2l.dll) as a child process, alone or under mpirun, in scratch directories.
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Xunit;

namespace L2L.Distributed.Tests;

/// <summary>What one run of l2l produced.</summary>
internal sealed record L2LResult(int ExitCode, string Out, string Error, TimeSpan Elapsed)
{
    public string[] ErrorLines => Error.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    public override string ToString() => $"exit {ExitCode} after {Elapsed.TotalSeconds:0.0} s\n--- stdout\n{Out}\n--- stderr\n{Error}";
}

/// <summary>A scratch directory with a tiny GPT-2 config, and ways to run l2l there (one process, or one rank per directory under mpirun).</summary>
internal sealed class L2LJob : IDisposable
{
    private static readonly TimeSpan HardLimit = TimeSpan.FromSeconds(180);

    public L2LJob()
    {
        Root = Path.Combine(Path.GetTempPath(), "l2l-dist-tests", Guid.NewGuid().ToString("N"));
        System.IO.Directory.CreateDirectory(Root);
        File.WriteAllText(Config, """{"vocab_size": 256, "n_positions": 16, "n_embd": 16, "n_layer": 2, "n_head": 2, "layer_norm_epsilon": 1e-5}""");
    }

    public string Root { get; }

    /// <summary>The tiny model's config.json.</summary>
    public string Config => Path.Combine(Root, "tiny.json");

    /// <summary>A fresh empty directory under the root (a rank's working directory).</summary>
    public string NewDirectory(string name)
    {
        var dir = Path.Combine(Root, name);
        System.IO.Directory.CreateDirectory(dir);
        return dir;
    }

    /// <summary>The l2l dll beside the tests.</summary>
    public static string Dll
    {
        get
        {
            var dll = Path.Combine(AppContext.BaseDirectory, "l2l.dll");
            Assert.True(File.Exists(dll), $"The l2l command line is missing: {dll}");
            return dll;
        }
    }

    private static string Dotnet => Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host : "dotnet";

    /// <summary>Runs <c>dotnet l2l.dll args</c> in <paramref name="workingDirectory"/>, without a launcher.</summary>
    public L2LResult RunAlone(string workingDirectory, string args, IReadOnlyDictionary<string, string>? environment = null) =>
        Run(Dotnet, [Dll, .. Words(args)], workingDirectory, environment, started: null);

    /// <summary>
    /// Runs one l2l rank per directory of <paramref name="workingDirectories"/> as one MPI job (an MPMD command line:
    /// <c>mpirun -np 1 --wdir A dotnet l2l … : -np 1 --wdir B dotnet l2l …</c>), each with the same arguments.
    /// <paramref name="started"/> sees the launcher process once it runs (to watch or disturb the job).
    /// </summary>
    public L2LResult RunRanks(MpiRun mpi, IReadOnlyList<string> workingDirectories, string args, IReadOnlyDictionary<string, string>? environment = null,
        Action<Process>? started = null)
    {
        mpi.SkipIfMissing();
        var argv = new List<string>(mpi.FixedArgs);
        for (var r = 0; r < workingDirectories.Count; r++)
        {
            if (r > 0) argv.Add(":");
            argv.AddRange(["-np", "1", "-wdir", workingDirectories[r], Dotnet, Dll]);
            argv.AddRange(Words(args));
        }
        return Run(mpi.Executable!, argv, workingDirectories[0], environment, started);
    }

    private static string[] Words(string args) => args.Split(' ', StringSplitOptions.RemoveEmptyEntries);

    private static L2LResult Run(string executable, IEnumerable<string> argv, string workingDirectory, IReadOnlyDictionary<string, string>? environment, Action<Process>? started)
    {
        var start = new ProcessStartInfo(executable)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory,
        };
        foreach (var a in argv) start.ArgumentList.Add(a);
        start.Environment["TERM"] = "dumb";
        foreach (var name in new[] { "L2L_MPI_LIBRARY", "L2L_MPI_TIMEOUT", "L2L_DEVICE" }) start.Environment.Remove(name);
        foreach (var (name, value) in environment ?? new Dictionary<string, string>()) start.Environment[name] = value;
        var clock = Stopwatch.StartNew();
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        started?.Invoke(process);
        if (!process.WaitForExit(HardLimit))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            Assert.Fail($"{executable} {string.Join(' ', argv)} did not finish within {HardLimit.TotalSeconds} s.\n{stdout.Result}\n{stderr.Result}");
        }
        process.WaitForExit();
        return new L2LResult(process.ExitCode, stdout.Result, stderr.Result, clock.Elapsed);
    }

    /// <summary>The (step, loss) pairs of a metrics file.</summary>
    public static (long Step, double Loss)[] Losses(string metrics) => File.ReadAllLines(metrics)
        .Select(l => JsonDocument.Parse(l).RootElement)
        .Select(e => (e.GetProperty("step").GetInt64(), e.GetProperty("loss").GetDouble())).ToArray();

    /// <summary>One field of every line of a metrics file, as text.</summary>
    public static string[] Field(string metrics, string name) => File.ReadAllLines(metrics)
        .Select(l => JsonDocument.Parse(l).RootElement.GetProperty(name).ToString()).ToArray();

    /// <summary>Every file under <paramref name="dir"/>, relative to it.</summary>
    public static string[] Files(string dir) => System.IO.Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories)
        .Select(f => Path.GetRelativePath(dir, f)).Order(StringComparer.Ordinal).ToArray();

    /// <summary>The process id of the rank <paramref name="rank"/> of the job whose environment holds <paramref name="marker"/> (found in /proc).</summary>
    public static int? FindRank(string marker, int rank)
    {
        foreach (var dir in System.IO.Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out var pid)) continue;
            string environ;
            try
            {
                environ = File.ReadAllText(Path.Combine(dir, "environ"));
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                continue;
            }
            var variables = environ.Split('\0');
            if (variables.Contains(marker) && variables.Contains($"OMPI_COMM_WORLD_RANK={rank}")
                && File.ReadAllText(Path.Combine(dir, "cmdline")).Contains("l2l.dll", StringComparison.Ordinal))
                return pid;
        }
        return null;
    }

    public void Dispose()
    {
        try
        {
            System.IO.Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
