// Data-parallel relay: one relay replica per device of this process, gradients reduced over devices and ranks by the param server.
using System.Diagnostics;
using L2L.Model;
using L2L.Model.Device;
using L2L.Training.Update;

namespace L2L.Training.Parallel;

/// <summary>Creates the relay executor of a data-parallel run.</summary>
public static class ParallelRelay
{
    /// <summary>
    /// The executor for <paramref name="setup"/>: with one device of one rank, exactly <see cref="RelayExecutor"/>;
    /// otherwise one relay replica per device, each on its own thread and its share of this rank's micro-batches
    /// (device d takes micro-batches d·U/D … (d+1)·U/D − 1 of this rank's), all fed by the one param server
    /// <paramref name="eps"/>, which must have been built with the same <paramref name="setup"/>. Its
    /// <see cref="IExecutor.Step"/> takes this rank's share of the global minibatch (<paramref name="microBatchesPerRank"/>
    /// micro-batches; the caller gives rank r the sequences r, r+R, … of the global batch) and returns the mean loss over
    /// the global minibatch's labelled targets.
    /// </summary>
    /// <param name="setup">The devices and ranks.</param>
    /// <param name="eps">The param server (owned by the caller), built with <paramref name="setup"/>.</param>
    /// <param name="mb">The shape of one micro-batch.</param>
    /// <param name="microBatchesPerRank">U per rank; a multiple of the device count.</param>
    /// <param name="placement">Where each replica keeps its stash.</param>
    /// <param name="resume">The checkpoint state (the layer update counts of <paramref name="control"/>).</param>
    /// <param name="control">Clipping and loss scaling; with more than one device or rank, clipping (per layer, or global with a deferred-mode server) applies to the reduced gradients, and loss scaling is refused.</param>
    /// <param name="fault">A test hook that poisons one layer's gradient at one step (on the first device).</param>
    /// <param name="dropout">Dropout rates.</param>
    /// <param name="seed">The run's seed, for the dropout masks.</param>
    /// <param name="selection">Layer drop and frozen layers.</param>
    /// <param name="codec">How each replica stores its stash.</param>
    /// <exception cref="ArgumentException">The batch does not split across the devices, or an option data parallel refuses is on.</exception>
    public static IExecutor Create(ParallelSetup setup, EagerParamServer eps, MicroBatch mb, int microBatchesPerRank, StashPlacement placement,
        TrainingState? resume = null, GradientControl? control = null, GradientFault? fault = null,
        DropoutRates? dropout = null, long seed = 0, LayerSelection? selection = null, Stash.StashCodecSettings? codec = null)
    {
        ArgumentNullException.ThrowIfNull(setup);
        ArgumentNullException.ThrowIfNull(eps);
        setup.Validate(microBatchesPerRank);
        if (!setup.IsParallel)
        {
            if (eps.Parallel is { IsParallel: true })
                throw new ArgumentException("The param server was built for data parallel, the executor for one device of one rank; build both with the same setup.");
            return new RelayExecutor(setup.Devices[0], eps, mb, microBatchesPerRank, placement, resume, control, fault, dropout, seed, selection, codec);
        }
        if (eps.Parallel is not { } built || built.DeviceCount != setup.DeviceCount || built.WorldSize != setup.WorldSize || built.ShardOptimizer != setup.ShardOptimizer)
            throw new ArgumentException($"The param server was not built for this data-parallel setup ({setup.DeviceCount} device(s) x {setup.WorldSize} rank(s)); pass the same setup to both.");
        if (control is { Scaler: not null })
            throw new ArgumentException("Dynamic loss scaling is not supported with data parallel yet; use --loss-scale none.");
        return new ParallelRelayExecutor(setup, eps, mb, microBatchesPerRank, placement, resume, control, fault, dropout, seed, selection, codec);
    }
}

/// <summary>
/// One <see cref="RelayExecutor"/> per device, run in lock-step by the shared param server: a layer's update, which
/// every replica's next fetch of it waits for, needs every replica's gradients of it.
/// </summary>
internal sealed class ParallelRelayExecutor : IExecutor
{
    private readonly ParallelSetup _setup;
    private readonly EagerParamServer _eps;
    private readonly GradientReducer _reducer;
    private readonly EagerParamServer[] _views;
    private readonly RelayExecutor[] _replicas;
    private readonly MicroBatch _mb;
    private readonly int _perDevice;
    private Exception? _failed;

    public ParallelRelayExecutor(ParallelSetup setup, EagerParamServer eps, MicroBatch mb, int microBatchesPerRank, StashPlacement placement,
        TrainingState? resume, GradientControl? control, GradientFault? fault, DropoutRates? dropout, long seed, LayerSelection? selection,
        Stash.StashCodecSettings? codec)
    {
        _setup = setup;
        _eps = eps;
        _reducer = eps.Reducer!;
        _mb = mb;
        var d = setup.DeviceCount;
        _perDevice = microBatchesPerRank / d;
        // Per-layer clipping: each layer's factor from the norm of its gradients reduced over every device and rank.
        if (control is { ClipGradNorm: not null, ClipMode: ClipMode.Layer })
            _reducer.LayerClip = sumOfSquares => control.LayerFactor(sumOfSquares, 1f);
        // Global clipping (deferred updates): the step's factor from the norm of every layer's reduced gradients.
        // Decide has no side effects without a loss scaler, which is refused.
        if (control is { ClipGradNorm: not null, ClipMode: ClipMode.Global })
            _reducer.GlobalFactor = sums => control.Decide(sums).Factor;
        _views = new EagerParamServer[d];
        _replicas = new RelayExecutor[d];
        var layers = eps.Layout.Layers.Count;
        try
        {
            for (var k = 0; k < d; k++)
            {
                _views[k] = eps.Replica(k);
                // Each replica counts layer updates itself (they agree); the first keeps the caller's control, which checkpoints record.
                var own = k == 0 ? control : new GradientControl(null, ClipMode.Global, LossScaleMode.None, layers, resume);
                _replicas[k] = new RelayExecutor(setup.Devices[k], _views[k], mb, _perDevice, placement, resume, own, k == 0 ? fault : null,
                    dropout, seed, selection, codec)
                {
                    MicroBatchOffset = k * _perDevice,
                };
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    public long StepsDone => _eps.StepsDone;

    /// <inheritdoc/>
    public StepResult Step(long step, ReadOnlySpan<int> inputs, ReadOnlySpan<int> targets, ReadOnlySpan<int> tokenTypes = default)
    {
        if (_failed is not null)
            throw new InvalidOperationException("A device's replica failed in an earlier step; the data-parallel executor cannot continue.", _failed);
        var d = _replicas.Length;
        var share = _perDevice * _mb.Tokens;
        if (inputs.Length != d * share || targets.Length != d * share)
            throw new ArgumentException($"Expected this rank's {d * share} input and target tokens ({d * _perDevice} micro-batches of {_mb.Batch}x{_mb.SeqLen}), got {inputs.Length} and {targets.Length}.");
        if (tokenTypes.Length != 0 && tokenTypes.Length != d * share)
            throw new ArgumentException($"Expected {d * share} token types or none, got {tokenTypes.Length}.");
        var collectiveBefore = _reducer.CollectiveSeconds;
        var waitBefore = _views.Select(v => v.CollectiveWaitSeconds).ToArray();
        double blocked = 0;

        // The loss is the mean over the global minibatch: every replica scales its loss gradient by 1 / (labelled targets of all devices and ranks).
        long labelled = 0;
        foreach (var t in targets)
            if (t != MicroBatchInputs.IgnoreIndex) labelled++;
        var start = Stopwatch.GetTimestamp();
        var total = (long)_reducer.SumOverRanks([labelled])[0];
        blocked += Stopwatch.GetElapsedTime(start).TotalSeconds;
        _reducer.BeginStep();

        var inputCopy = inputs.ToArray();
        var targetCopy = targets.ToArray();
        var typeCopy = tokenTypes.ToArray();
        var results = new StepResult[d];
        Exception? first = null;
        void RunReplica(int k)
        {
            try
            {
                _replicas[k].LabelledTotal = total;
                var types = typeCopy.Length == 0 ? ReadOnlySpan<int>.Empty : typeCopy.AsSpan(k * share, share);
                results[k] = _replicas[k].Step(step, inputCopy.AsSpan(k * share, share), targetCopy.AsSpan(k * share, share), types);
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref first, e, null);
                _reducer.Fail(e);
            }
        }
        var others = new Task[d - 1];
        for (var k = 1; k < d; k++)
        {
            var replica = k;
            others[k - 1] = Task.Factory.StartNew(() => RunReplica(replica), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        }
        RunReplica(0);
        Task.WaitAll(others);
        if (first is not null)
        {
            _failed = first;
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(first).Throw();
        }

        // Each replica's loss is its labelled targets' loss sum over the global count: their sum, in device then rank order, is the global mean.
        var localLoss = 0.0;
        foreach (var r in results) localLoss += r.Loss;
        start = Stopwatch.GetTimestamp();
        var sums = _reducer.SumOverRanks([localLoss], appendSumSquares: true);
        blocked += Stopwatch.GetElapsedTime(start).TotalSeconds;
        _eps.CompleteStep();
        var loss = sums[0];
        if (!double.IsFinite(loss))
            throw new NonFiniteLossException(step, loss);
        var fetchWait = 0.0;
        for (var k = 0; k < d; k++)
            fetchWait = Math.Max(fetchWait, _views[k].CollectiveWaitSeconds - waitBefore[k]);
        blocked += fetchWait;
        var collective = _reducer.CollectiveSeconds - collectiveBefore;
        return new StepResult(loss, results.Sum(r => r.BusBytes), results.Max(r => r.CopyWaitSeconds), results.Max(r => r.UpdateWaitSeconds),
            Math.Sqrt(sums[1]), false, 1f, 0, results[0].BlocksRun, results[0].BackwardLayers,
            _setup.WorldSize > 1 ? collective : 0, _setup.WorldSize > 1 ? Math.Max(0, collective - blocked) : 0);
    }

    /// <inheritdoc/>
    public float[][] Weights() => _eps.SnapshotWeights();

    /// <inheritdoc/>
    public TrainingState State(IReadOnlyDictionary<string, string>? metadata = null) => _eps.SnapshotState(metadata);

    /// <inheritdoc/>
    public void Dispose()
    {
        try { _eps.WaitAll(); } catch (Exception) { /* release the replicas regardless */ }
        foreach (var r in _replicas) r?.Dispose();
    }
}
