// Which accelerators a process trains on and which ranks of a job it belongs to: the input of data-parallel training.
using L2L.Backends;
using L2L.Training.Distributed;

namespace L2L.Training.Parallel;

/// <summary>The accelerators of this process and the ranks of the job.</summary>
/// <param name="Devices">The accelerators of this process, each running one replica of the relay on its share of the micro-batches (at least one).</param>
/// <param name="Collectives">The job's host collectives (<see cref="SingleProcessCollectives"/> when no launcher started the process).</param>
/// <param name="ShardOptimizer">Whether each rank keeps the master weights' optimizer state for only 1/WorldSize of every layer (needs more than one rank).</param>
public sealed record ParallelSetup(IReadOnlyList<Backend> Devices, IHostCollectives Collectives, bool ShardOptimizer = false)
{
    /// <summary>Accelerators in this process.</summary>
    public int DeviceCount => Devices.Count;

    /// <summary>Ranks in the job.</summary>
    public int WorldSize => Collectives.WorldSize;

    /// <summary>This process's rank.</summary>
    public int Rank => Collectives.Rank;

    /// <summary>Whether anything is reduced across devices or ranks (more than one device, or more than one rank).</summary>
    public bool IsParallel => DeviceCount > 1 || WorldSize > 1;

    /// <summary>
    /// U per rank for a run of <paramref name="microBatches"/> micro-batches per global minibatch: each rank takes an
    /// equal share, and each rank's share splits equally across its devices.
    /// </summary>
    /// <exception cref="ArgumentException">The global batch does not split across the ranks and devices.</exception>
    public int MicroBatchesPerRank(int microBatches)
    {
        var parts = WorldSize * DeviceCount;
        if (microBatches < parts || microBatches % parts != 0)
            throw new ArgumentException($"{microBatches} micro-batches do not split across {WorldSize} rank(s) x {DeviceCount} device(s); use a micro-batch count that is a multiple of {parts}.");
        return microBatches / WorldSize;
    }

    /// <summary>
    /// Copies this rank's share of a global minibatch of (B, T) tokens: sequences Rank, Rank + R, Rank + 2R, … of
    /// <paramref name="global"/>, in that order, into <paramref name="share"/> (B / R sequences), so the ranks together
    /// train on exactly the batch one process would.
    /// </summary>
    /// <exception cref="ArgumentException">B is not a multiple of the world size, or the lengths do not fit.</exception>
    public void TakeRankShare(ReadOnlySpan<int> global, Span<int> share, int seqLen)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(seqLen, 1);
        var sequences = global.Length / seqLen;
        if (global.Length % seqLen != 0 || sequences % WorldSize != 0)
            throw new ArgumentException($"A minibatch of {global.Length} tokens is not a whole number of sequences of {seqLen} per rank for {WorldSize} rank(s); use a batch that is a multiple of {WorldSize}.");
        if (share.Length != global.Length / WorldSize)
            throw new ArgumentException($"A rank's share of {global.Length} tokens over {WorldSize} rank(s) is {global.Length / WorldSize} tokens, not {share.Length}.");
        for (var j = 0; j < sequences / WorldSize; j++)
            global.Slice((j * WorldSize + Rank) * seqLen, seqLen).CopyTo(share.Slice(j * seqLen, seqLen));
    }

    /// <summary>
    /// Checks the setup and <paramref name="microBatchesPerRank"/> (U per rank) against it: at least one device, U a
    /// positive multiple of the device count, sharding only with more than one rank.
    /// </summary>
    /// <exception cref="ArgumentException">The setup or the split does not work; the message says what to change.</exception>
    public void Validate(int? microBatchesPerRank = null)
    {
        if (Devices is null || Devices.Count == 0)
            throw new ArgumentException("Data-parallel training needs at least one device.");
        if (ShardOptimizer && WorldSize < 2)
            throw new ArgumentException($"Sharding the optimizer state splits it across MPI ranks, but this job has {WorldSize} rank; start it under mpirun with at least 2 ranks, or leave sharding off.");
        if (microBatchesPerRank is { } u && (u < DeviceCount || u % DeviceCount != 0))
            throw new ArgumentException($"{u} micro-batches per rank do not split across {DeviceCount} devices; use a micro-batch count per rank that is a multiple of {DeviceCount}.");
    }
}
