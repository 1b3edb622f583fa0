// Ends the whole MPI job when one collective call has not returned in time, so a dead or stuck rank cannot hang the others.
using System.Diagnostics;
using System.Runtime.InteropServices;

namespace L2L.Training.Distributed;

/// <summary>
/// A background thread that watches the MPI call in progress. When a call has run longer than the timeout it writes one
/// error line to stderr and calls MPI_Abort, which makes the launcher end every rank with a non-zero exit code; if the
/// process is still alive a few seconds later it exits by itself. Requires MPI_THREAD_MULTIPLE for MPI_Abort to be
/// legal from this thread; libraries that grant less still abort in practice, which is the best that can be done.
/// </summary>
internal sealed class CollectiveWatchdog : IDisposable
{
    private static readonly TimeSpan ForcedExitGrace = TimeSpan.FromSeconds(10);
    private readonly Action<int> _abort;
    private readonly Func<string> _where;
    private readonly Thread _thread;
    private readonly object _gate = new();
    private long _timeoutTicks;
    private long _startedAt;   // Stopwatch timestamp of the call in progress, 0 when none
    private string _call = "";
    private bool _stopping;

    public CollectiveWatchdog(TimeSpan timeout, Action<int> abort, Func<string> where)
    {
        Timeout = timeout;
        _abort = abort;
        _where = where;
        _thread = new Thread(Watch) { IsBackground = true, Name = "MPI collective watchdog" };
        _thread.Start();
    }

    /// <summary>Longest time one MPI call may take before the job is aborted.</summary>
    public TimeSpan Timeout
    {
        get => TimeSpan.FromTicks(Interlocked.Read(ref _timeoutTicks));
        set
        {
            if (value <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(value), "The collective timeout must be positive.");
            Interlocked.Exchange(ref _timeoutTicks, value.Ticks);
        }
    }

    public void Begin(string call)
    {
        lock (_gate)
        {
            _call = call;
            _startedAt = Stopwatch.GetTimestamp();
            Monitor.PulseAll(_gate);
        }
    }

    public void End()
    {
        lock (_gate) _startedAt = 0;
    }

    public void Dispose()
    {
        lock (_gate)
        {
            _stopping = true;
            Monitor.PulseAll(_gate);
        }
        _thread.Join();
    }

    private void Watch()
    {
        lock (_gate)
        {
            while (!_stopping)
            {
                if (_startedAt == 0) { Monitor.Wait(_gate); continue; }
                TimeSpan elapsed = Stopwatch.GetElapsedTime(_startedAt);
                TimeSpan timeout = Timeout;
                if (elapsed < timeout)
                {
                    Monitor.Wait(_gate, Min(timeout - elapsed, TimeSpan.FromMilliseconds(500)) + TimeSpan.FromMilliseconds(1));
                    continue;
                }
                Fire(_call, timeout);
                return;
            }
        }
    }

    private void Fire(string call, TimeSpan timeout)
    {
        Console.Error.WriteLine(
            $"error: {call} on {_where()} did not complete within {timeout.TotalSeconds:0.###} s ({MpiOptions.TimeoutVariable}); " +
            "another rank has probably failed or hung. Ending every rank.");
        Console.Error.Flush();
        var forced = new Thread(() =>
        {
            Thread.Sleep(ForcedExitGrace);
            _exit(MpiCollectives.TimeoutExitCode);
        }) { IsBackground = true };
        forced.Start();
        _abort(MpiCollectives.TimeoutExitCode);
        _exit(MpiCollectives.TimeoutExitCode);
    }

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;

    [DllImport("libc", EntryPoint = "_exit")]
    private static extern void _exit(int status);
}
