// The collectives of a job with one rank (no launcher): sums are the rank's own values, gathers are copies.
namespace L2L.Training.Distributed;

/// <summary>
/// <see cref="IHostCollectives"/> for a single process, so code written against the interface runs unchanged without
/// MPI. Results are what a one-rank MPI job would produce, without loading any library.
/// </summary>
public sealed unsafe class SingleProcessCollectives : IHostCollectives
{
    /// <inheritdoc/>
    public int Rank => 0;

    /// <inheritdoc/>
    public int WorldSize => 1;

    /// <inheritdoc/>
    public string Description => "single process (no MPI)";

    /// <inheritdoc/>
    public void Barrier() { }

    /// <inheritdoc/>
    public void AllReduceSum(float* buffer, long count) => ArgumentOutOfRangeException.ThrowIfNegative(count);

    /// <inheritdoc/>
    public void ReduceScatterBlockSum(float* send, float* block, long blockCount) => Copy(send, block, blockCount);

    /// <inheritdoc/>
    public void AllGather(float* block, float* all, long blockCount)
    {
        if (block != all) Copy(block, all, blockCount);
    }

    /// <inheritdoc/>
    public void Broadcast(byte* buffer, long count, int root)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (root != 0) throw new ArgumentOutOfRangeException(nameof(root), $"Root {root} is not a rank of this 1-rank job.");
    }

    /// <inheritdoc/>
    public void Abort(int exitCode, string message)
    {
        Console.Error.WriteLine(message);
        Environment.Exit(exitCode);
    }

    /// <summary>Nothing to release.</summary>
    public void Dispose() { }

    private static void Copy(float* from, float* to, long count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        Buffer.MemoryCopy(from, to, count * sizeof(float), count * sizeof(float));
    }
}
