// A real SIGINT to a training l2l process: it finishes the step, saves, plots, says how to resume and exits 130.
using System.Diagnostics;
using System.Runtime.InteropServices;
using L2L.Model;
using L2L.TestSupport;
using Xunit;

namespace L2L.Cli.Tests;

public sealed partial class InterruptTests(BackendFixture fixture)
{
    private const int SigInt = 2, SigTerm = 15;

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);

    [Fact]
    public void FirstInterruptFinishesTheStepSavesAndResumeContinuesWithoutRepeats()
    {
        using var ws = Workspace.Create(fixture);
        using var child = Start(ws, "train --config @/tiny.json --steps 100000 --batch 2 --micro-batches 1 --seq 4 --device cpu --save @/run --log @/run.jsonl --plot @/run.png");
        WaitForFirstMetricsLine(child, ws["run.jsonl"]);
        Signal(child.Process);
        var (code, stdout, stderr) = child.Finish();

        Assert.True(code == Cli.InterruptedExitCode, $"exit {code}; stdout: {stdout}; stderr: {stderr}");
        var stopped = stdout.Split('\n').Single(l => l.StartsWith("interrupted: stopped after step ", StringComparison.Ordinal));
        var step = long.Parse(stopped["interrupted: stopped after step ".Length..].Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
        Assert.Contains($"saved checkpoint to {ws["run"]} (step {step})", stdout);
        Assert.Contains($"resume with: l2l train --steps 100000 --batch 2 --micro-batches 1 --seq 4 --device cpu --save {ws["run"]} --log {ws["run.jsonl"]} --plot {ws["run.png"]} --resume {ws["run"]}", stdout);
        Assert.Equal(step, ws.CheckpointStep(ws["run"]));
        Assert.Equal(Enumerable.Range(1, (int)step).Select(i => (long)i), Workspace.LoggedSteps(ws["run.jsonl"]));
        Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], File.ReadAllBytes(ws["run.png"]).Take(4));

        var resumed = ws.Run(fixture, $"train --resume @/run --steps {step + 2} --device cpu --save @/run --log @/run.jsonl");
        Assert.True(resumed.ExitCode == 0, resumed.Error);
        Assert.Equal(Enumerable.Range(1, (int)step + 2).Select(i => (long)i), Workspace.LoggedSteps(ws["run.jsonl"]));
        Assert.Equal(step + 2, ws.CheckpointStep(ws["run"]));
    }

    [Fact]
    public void SecondInterruptAbortsAtOnceAndLeavesTheLastCheckpointIntact()
    {
        using var ws = Workspace.Create(fixture);
        // Steps long enough (8 x 8 tokens) that the second signal lands while one is running.
        using var child = Start(ws, "train --config @/tiny.json --steps 100000 --batch 8 --micro-batches 1 --seq 8 --device cpu --save @/run --save-every 1 --log @/run.jsonl");
        WaitForFirstMetricsLine(child, ws["run.jsonl"]);
        var clock = Stopwatch.StartNew();
        while (!File.Exists(Path.Combine(ws["run"], Checkpoint.StateFile)) && clock.Elapsed < TimeSpan.FromSeconds(30))
            Thread.Sleep(5); // a first checkpoint to keep
        Signal(child.Process);
        clock = Stopwatch.StartNew();
        while (!child.Output.Contains("interrupt: stopping", StringComparison.Ordinal) && clock.Elapsed < TimeSpan.FromSeconds(30))
            Thread.Sleep(5); // two signals sent back to back may arrive as one
        Signal(child.Process);
        var (code, _, stderr) = child.Finish();

        Assert.True(code == Cli.InterruptedExitCode, $"exit {code}; stderr: {stderr}");
        Assert.Contains("aborted; the last checkpoint saved before this is intact.", stderr);
        var (config, weights) = Checkpoint.Load(ws["run"]);
        Assert.True(ws.CheckpointStep(ws["run"]) >= 1);
        Assert.Equal(new ModelLayout(config).Layers.Count, weights.Length);
    }

    /// <summary>
    /// Sends SIGINT, unless this process was started with SIGINT ignored (a background job of a
    /// non-interactive shell), which the child inherits and cannot undo; SIGTERM, handled the same, then.
    /// </summary>
    private static void Signal(Process process)
    {
        var signal = SigIntIgnored() ? SigTerm : SigInt;
        Assert.Equal(0, Kill(process.Id, signal));
    }

    private static bool SigIntIgnored()
    {
        var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("SigIgn:", StringComparison.Ordinal));
        return line is not null && (Convert.ToUInt64(line["SigIgn:".Length..].Trim(), 16) & (1UL << (SigInt - 1))) != 0;
    }

    private static void WaitForFirstMetricsLine(Child child, string log)
    {
        var clock = Stopwatch.StartNew();
        while (!(File.Exists(log) && File.ReadAllText(log).Contains('\n')))
        {
            if (child.Process.HasExited)
                Assert.Fail($"l2l exited with {child.Process.ExitCode} before its first step: {child.Output}");
            if (clock.Elapsed > TimeSpan.FromMinutes(2)) Assert.Fail("no metrics line within 2 minutes");
            Thread.Sleep(50);
        }
    }

    private static Child Start(Workspace ws, string commandLine)
    {
        Assert.SkipUnless(OperatingSystem.IsLinux(), "Sends POSIX signals through libc.");
        var info = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add(CliAssembly());
        foreach (var word in ws.Words(commandLine)) info.ArgumentList.Add(word);
        return new Child(Process.Start(info)!);
    }

    /// <summary>The built l2l.dll of the same configuration as this test assembly.</summary>
    private static string CliAssembly()
    {
        var here = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        var framework = here.Name;
        var configuration = here.Parent!.Name;
        var root = here;
        while (root is not null && !File.Exists(Path.Combine(root.FullName, "L2L.sln"))) root = root.Parent;
        Assert.NotNull(root);
        var dll = Path.Combine(root.FullName, "src", "L2L.Cli", "bin", configuration, framework, "l2l.dll");
        Assert.True(File.Exists(dll), $"{dll} is not built");
        return dll;
    }

    /// <summary>A child process whose output is collected as it comes.</summary>
    private sealed class Child : IDisposable
    {
        private readonly System.Text.StringBuilder _out = new(), _err = new();

        public Child(Process process)
        {
            Process = process;
            process.OutputDataReceived += (_, e) => { lock (_out) _out.AppendLine(e.Data); };
            process.ErrorDataReceived += (_, e) => { lock (_err) _err.AppendLine(e.Data); };
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
        }

        public Process Process { get; }

        public string Output
        {
            get { lock (_out) lock (_err) return $"{_out}\n{_err}"; }
        }

        public (int Code, string Out, string Err) Finish()
        {
            if (!Process.WaitForExit(TimeSpan.FromMinutes(1)))
            {
                Process.Kill(entireProcessTree: true);
                Assert.Fail($"l2l did not exit within a minute of the interrupt: {Output}");
            }
            Process.WaitForExit(); // drains the redirected streams
            lock (_out) lock (_err) return (Process.ExitCode, _out.ToString(), _err.ToString());
        }

        public void Dispose()
        {
            if (!Process.HasExited) Process.Kill(entireProcessTree: true);
            Process.Dispose();
        }
    }
}
