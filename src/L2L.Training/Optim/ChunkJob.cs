// A reusable parallel loop over fixed-size chunks that allocates nothing per run (Parallel.For allocates its
// delegates, tasks and loop state on every call, and Step is called per layer per step).
namespace L2L.Training.Optim;

/// <summary>
/// One parallel loop over <c>chunkCount</c> chunks. The calling thread works too and helpers come from the thread
/// pool; chunks are claimed one at a time, so the loop always finishes even if no helper ever gets to run.
/// A job goes back to its pool only once every queued helper has run, so a late helper never sees the next loop.
/// </summary>
internal abstract class ChunkJob : IThreadPoolWorkItem
{
    // Waiting on a plain monitor: ManualResetEventSlim allocates its lock object on the first blocking wait.
    private readonly object _gate = new();
    private Stack<ChunkJob>? _home;
    private int _count;
    private int _next;
    private int _remaining;
    private int _references;

    /// <summary>Runs chunk <paramref name="index"/>; must not throw (the chunk bodies are arithmetic over validated ranges).</summary>
    protected abstract void RunChunk(int index);

    /// <summary>Takes a free job from <paramref name="pool"/>, or makes one the first time.</summary>
    public static TJob Rent<TJob>(Stack<ChunkJob> pool) where TJob : ChunkJob, new()
    {
        lock (pool)
        {
            if (pool.TryPop(out var free)) return (TJob)free;
        }
        return new TJob { _home = pool };
    }

    /// <summary>Runs every chunk on the calling thread and up to <paramref name="threads"/> - 1 helpers, returns when all are done, then gives the job back.</summary>
    public void RunAndRelease(int chunkCount, int threads)
    {
        _count = chunkCount;
        _next = 0;
        _remaining = chunkCount;
        var helpers = Math.Min(threads, chunkCount) - 1;
        _references = helpers + 1;
        for (var h = 0; h < helpers; h++) ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
        Work();
        if (Volatile.Read(ref _remaining) != 0)
        {
            lock (_gate)
            {
                while (Volatile.Read(ref _remaining) != 0) Monitor.Wait(_gate);
            }
        }
        Release();
    }

    void IThreadPoolWorkItem.Execute()
    {
        Work();
        Release();
    }

    private void Work()
    {
        int index;
        while ((index = Interlocked.Increment(ref _next) - 1) < _count)
        {
            RunChunk(index);
            if (Interlocked.Decrement(ref _remaining) != 0) continue;
            lock (_gate) Monitor.PulseAll(_gate);
        }
    }

    private void Release()
    {
        if (Interlocked.Decrement(ref _references) != 0) return;
        var home = _home!;
        lock (home) home.Push(this);
    }
}
