// Finds an MPI launcher on PATH and runs the scenario driver under it as a child process, with a hard time limit.
using System.Diagnostics;
using Xunit;

namespace L2L.Distributed.Tests;

/// <summary>What one mpirun of the driver produced.</summary>
internal sealed record MpiRunResult(int ExitCode, string Out, string Error, TimeSpan Elapsed)
{
    /// <summary>Lines the driver printed for rank <paramref name="rank"/> (its lines start "rank r/R: ").</summary>
    public string[] LinesOf(int rank) =>
        Out.Split('\n', StringSplitOptions.TrimEntries)
           .Select(l => l.IndexOf($"rank {rank}/", StringComparison.Ordinal) is var i and >= 0 ? l[i..] : "") // past any terminal escape
           .Where(l => l.Length > 0).ToArray();

    public override string ToString() => $"exit {ExitCode} after {Elapsed.TotalSeconds:0.0} s\n--- stdout\n{Out}\n--- stderr\n{Error}";
}

/// <summary>An MPI implementation's launcher, and how to reach it.</summary>
internal sealed class MpiRun
{
    private static readonly TimeSpan HardLimit = TimeSpan.FromSeconds(120);

    private MpiRun(string name, string? executable, string[] fixedArgs, string missing)
    {
        Name = name;
        Executable = executable;
        FixedArgs = fixedArgs;
        Missing = missing;
    }

    public string Name { get; }

    public string? Executable { get; }

    public string[] FixedArgs { get; }

    public string Missing { get; }

    /// <summary>"openmpi" or "mpich".</summary>
    public static MpiRun Get(string family) => family switch
    {
        // Open MPI refuses to run as root without the flag, and counts cores as slots unless told to oversubscribe.
        "openmpi" => new MpiRun("Open MPI", FindLauncher(["mpirun.openmpi", "mpirun", "mpiexec"], ["Open MPI", "OpenRTE"]),
            ["--allow-run-as-root", "--oversubscribe"],
            "Open MPI's mpirun was not found on PATH (Debian: apt-get install openmpi-bin libopenmpi-dev), so this test did not run."),
        "mpich" => new MpiRun("MPICH", FindLauncher(["mpirun.mpich", "mpiexec.mpich", "mpiexec.hydra", "mpirun", "mpiexec"], ["HYDRA"]),
            [],
            "MPICH's mpirun (Hydra) was not found on PATH (Debian: apt-get install mpich), so this test did not run."),
        _ => throw new ArgumentException(family),
    };

    /// <summary>Skips the calling test, with the reason, when this launcher is not installed.</summary>
    public void SkipIfMissing()
    {
        if (Executable is null) Assert.Skip(Missing);
    }

    /// <summary>Runs <c>launcher -np ranks dotnet L2L.Distributed.Driver.dll scenario args…</c>.</summary>
    public MpiRunResult Run(int ranks, string scenario, params string[] args) => Run(ranks, scenario, args, environment: new Dictionary<string, string>());

    /// <summary>As above, with extra environment variables for the ranks.</summary>
    public MpiRunResult Run(int ranks, string scenario, string[] args, IReadOnlyDictionary<string, string> environment)
    {
        SkipIfMissing();
        string driver = Path.Combine(AppContext.BaseDirectory, "L2L.Distributed.Driver.dll");
        Assert.True(File.Exists(driver), $"The scenario driver is missing: {driver}");
        var start = new ProcessStartInfo(Executable!)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string a in FixedArgs) start.ArgumentList.Add(a);
        start.ArgumentList.Add("-np");
        start.ArgumentList.Add(ranks.ToString(System.Globalization.CultureInfo.InvariantCulture));
        start.ArgumentList.Add(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host : "dotnet");
        start.ArgumentList.Add(driver);
        start.ArgumentList.Add(scenario);
        foreach (string a in args) start.ArgumentList.Add(a);
        start.Environment["TERM"] = "dumb";
        start.Environment.Remove("L2L_MPI_LIBRARY");
        start.Environment.Remove("L2L_MPI_TIMEOUT");
        foreach (var (name, value) in environment) start.Environment[name] = value;

        var clock = Stopwatch.StartNew();
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(HardLimit))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            Assert.Fail($"{Name}: mpirun -np {ranks} {scenario} did not finish within {HardLimit.TotalSeconds} s.\n{stdout.Result}\n{stderr.Result}");
        }
        process.WaitForExit();
        return new MpiRunResult(process.ExitCode, stdout.Result, stderr.Result, clock.Elapsed);
    }

    // The first name on PATH whose --version mentions the family (Debian's alternatives may point mpirun at either).
    private static string? FindLauncher(string[] names, string[] versionMarks)
    {
        foreach (string name in names)
        {
            string? path = OnPath(name);
            if (path is not null && VersionMentions(path, versionMarks)) return path;
        }
        return null;
    }

    private static string? OnPath(string name)
    {
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            string candidate = Path.Combine(dir, name);
            if (File.Exists(candidate)) return candidate;
        }
        return null;
    }

    private static bool VersionMentions(string path, string[] marks)
    {
        try
        {
            var start = new ProcessStartInfo(path, "--version") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            using var p = Process.Start(start)!;
            var err = p.StandardError.ReadToEndAsync();
            string text = p.StandardOutput.ReadToEnd() + err.Result;
            if (!p.WaitForExit(TimeSpan.FromSeconds(20))) { p.Kill(true); return false; }
            return marks.Any(m => text.Contains(m, StringComparison.OrdinalIgnoreCase));
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return false;
        }
    }
}
