// The training loop: data, executor, metrics and checkpoints for one run.
using System.Diagnostics;
using System.Text.Json;
using L2L.Backends;
using L2L.Model;
using L2L.Model.Data;
using L2L.Model.Device;
using L2L.Training.Parallel;

namespace L2L.Training;

/// <summary>What one finished step reports.</summary>
/// <param name="Step">Optimizer steps completed (1-based).</param>
/// <param name="Loss">Mean cross-entropy of the step's minibatch.</param>
/// <param name="LearningRate">The learning rate used.</param>
/// <param name="TokensPerSecond">Tokens processed per second in this step.</param>
/// <param name="StepSeconds">Wall time of the step.</param>
/// <param name="DevicePeakBytes">Peak tracked device bytes since the run started.</param>
/// <param name="DevicePeakBytesByCategory">The same per category.</param>
/// <param name="BusBytes">Bytes moved between host and device in this step.</param>
/// <param name="DeviceAllocations">Device allocations made so far (constant after the first step).</param>
/// <param name="CopyWaitSeconds">Time blocked waiting on host/device transfers in this step.</param>
/// <param name="UpdateWaitSeconds">Time blocked before fetching a layer whose host update had not finished.</param>
/// <param name="ValLoss">Mean validation loss after this step, on steps where validation ran (<see cref="Trainer.EnableValidation"/>).</param>
/// <param name="GradNorm">Global L2 norm of the step's gradients before clipping (unscaled).</param>
/// <param name="SkippedSteps">Steps skipped so far because their gradients overflowed (dynamic loss scaling).</param>
/// <param name="LossScale">The loss scale after this step (1 without dynamic loss scaling).</param>
/// <param name="BlocksRun">Transformer blocks run this step (fewer under layer drop).</param>
/// <param name="BackwardLayers">Layers whose backward ran this step (fewer with frozen bottom layers).</param>
/// <param name="WorldSize">MPI ranks of the job (1 without MPI).</param>
/// <param name="Devices">Accelerators in this process.</param>
/// <param name="CollectiveSeconds">Time this rank spent in cross-rank collectives this step (0 with one rank).</param>
/// <param name="CollectiveHiddenSeconds">The part of <paramref name="CollectiveSeconds"/> that overlapped device work (did not lengthen the step).</param>
/// <param name="BusBytesByKind">The step's bus bytes by kind (weights, grads, stash, boundary_grads, io); their total is <paramref name="BusBytes"/>.</param>
/// <param name="StashBits">With a relay stash codec, the bits each stash level was stored at this step (logged as <c>stash_bits</c>).</param>
/// <param name="HostBytes">The run's host bytes: pinned host buffers (param server and executor) and the param server's optimizer state.</param>
/// <param name="Precision">The device storage precision: <c>fp32</c>, <c>bf16</c> or <c>fp16</c>.</param>
/// <param name="OverflowedLayers">Layers whose gradients overflowed this step and were not updated (logged as <c>overflowed_layers</c>; null: none).</param>
public sealed record StepMetrics(long Step, double Loss, double LearningRate, double TokensPerSecond, double StepSeconds,
    long DevicePeakBytes, IReadOnlyDictionary<string, long> DevicePeakBytesByCategory, long BusBytes, long DeviceAllocations,
    double CopyWaitSeconds = 0, double UpdateWaitSeconds = 0, double? ValLoss = null, double GradNorm = double.NaN, long SkippedSteps = 0, float LossScale = 1f,
    int BlocksRun = 0, int BackwardLayers = 0, int WorldSize = 1, int Devices = 1, double CollectiveSeconds = 0, double CollectiveHiddenSeconds = 0,
    Planning.BusTraffic BusBytesByKind = default, long HostBytes = 0, IReadOnlyList<int>? StashBits = null, string Precision = "fp32",
    IReadOnlyList<string>? OverflowedLayers = null)
{
    /// <summary>The fraction of the step spent waiting on transfers.</summary>
    public double CopyWaitFraction => StepSeconds > 0 ? CopyWaitSeconds / StepSeconds : 0;

    /// <summary>The fraction of the step spent waiting for the param server's updates.</summary>
    public double UpdateWaitFraction => StepSeconds > 0 ? UpdateWaitSeconds / StepSeconds : 0;
}

/// <summary>Runs training: builds the executor, feeds it batches, logs metrics and saves checkpoints.</summary>
public sealed class Trainer : IDisposable
{
    private readonly Backend _backend;
    private readonly TrainOptions _options;
    private readonly ModelLayout _layout;
    private readonly IBatchSource _loader;
    private readonly EagerParamServer? _eps;
    private readonly IExecutor _executor;
    private readonly int[] _inputs, _targets;
    private readonly ParallelSetup? _parallel;
    private readonly int[] _rankInputs, _rankTargets; // this rank's sequences r, r+R, … of the minibatch (the minibatch itself with one rank)
    private Validation? _validation;
    private readonly Update.GradientControl _control;
    private readonly long?[] _budgetBefore;

    /// <summary>
    /// Prepares a run on <paramref name="backend"/>: initial weights come from <paramref name="resume"/>
    /// (weights and optimizer state), else <paramref name="init"/> (weights only), else the model's own initialisation.
    /// A masked-language model reads its targets from <paramref name="labels"/> when given, else masks on the fly.
    /// With <paramref name="parallel"/> the run is data parallel over its devices (the first is <paramref name="backend"/>) and ranks:
    /// see the other constructor.
    /// </summary>
    public Trainer(Backend backend, TrainOptions options, ITokenSource data, float[][]? init = null, TrainingState? resume = null,
        ITokenSource? labels = null, ParallelSetup? parallel = null)
        : this(backend, options, CheckedBatches(options, data, labels), init, resume, parallel)
    {
    }

    /// <summary>
    /// Prepares a run that reads its minibatches from <paramref name="batches"/> (B and T as in <paramref name="options"/>).
    /// With <paramref name="parallel"/> (needed when <see cref="TrainOptions.IsParallel"/>) every rank reads the same global
    /// minibatch and keeps sequences r, r+R, … of it, so the job trains on the batch one process would; only rank 0 writes
    /// the metrics log and checkpoints.
    /// </summary>
    public Trainer(Backend backend, TrainOptions options, IBatchSource batches, float[][]? init = null, TrainingState? resume = null,
        ParallelSetup? parallel = null)
    {
        options.Validate();
        if (batches.Batch != options.Batch || batches.SeqLen != options.SeqLen)
            throw new ArgumentException($"The batch source makes {batches.Batch}x{batches.SeqLen} minibatches; the run needs {options.Batch}x{options.SeqLen}.");
        if (parallel is not null && (parallel.DeviceCount != options.Devices || parallel.WorldSize != options.WorldSize || !ReferenceEquals(parallel.Devices[0], backend)))
            throw new ArgumentException($"The parallel setup ({parallel.DeviceCount} devices, {parallel.WorldSize} ranks) does not match the options ({options.Devices} devices, {options.WorldSize} ranks) or does not start with the given backend.");
        if (parallel is null && options.IsParallel)
            throw new ArgumentException($"The options ask for {options.Devices} devices and {options.WorldSize} ranks; pass the parallel setup that provides them.");
        _backend = backend;
        _options = options;
        _parallel = options.IsParallel ? parallel : null;
        _layout = new ModelLayout(options.Config);
        _loader = batches;
        _inputs = new int[options.Batch * options.SeqLen];
        _targets = new int[options.Batch * options.SeqLen];
        (_rankInputs, _rankTargets) = options.WorldSize == 1 ? (_inputs, _targets)
            : (new int[options.Batch / options.WorldSize * options.SeqLen], new int[options.Batch / options.WorldSize * options.SeqLen]);
        // The budget is this run's: restored when the trainer is disposed, so a later run on the same backend is not capped by it.
        _budgetBefore = Devices.Select(d => d.Memory.BudgetBytes).ToArray();
        foreach (var device in Devices)
        {
            if (options.DeviceBudgetBytes is { } budget)
                device.Memory.BudgetBytes = budget;
            device.Memory.ResetPeak(); // the run's peak includes the executor's own allocations
        }
        var pinnedBefore = backend.Memory.PinnedHostBytes;
        var mb = new MicroBatch(options.Config, options.MicroBatchSize, options.SeqLen);
        _control = Update.GradientControl.From(options, resume);
        if (options.Executor == ExecutorKind.Relay)
        {
            int[] onDevice = options.ResolvedEmbeddingUpdate == Update.UpdateLocation.Device ? [_layout.Embedding.Index, _layout.Head.Index] : [];
            // A fresh model is initialised straight into the param server's pinned buffers (never held twice).
            _eps = init is not null
                ? new EagerParamServer(backend, _layout, init, options.Optimizer, options.LearningRate, resume, options.OptimizerThreads, onDevice, mode: options.ResolvedUpdateMode, statePrecision: options.OptimizerState, parallel: _parallel, precision: options.Precision)
                : new EagerParamServer(backend, _layout, Models.LayerInitializer(_layout, options.Seed),
                    options.Optimizer, options.LearningRate, resume, options.OptimizerThreads, onDevice, mode: options.ResolvedUpdateMode, statePrecision: options.OptimizerState, parallel: _parallel, precision: options.Precision);
            try
            {
                _executor = _parallel is { } setup
                    ? ParallelRelay.Create(setup, _eps, mb, setup.MicroBatchesPerRank(options.MicroBatches), options.Stash, resume, _control, options.GradientFault,
                        options.ResolvedDropout, options.Seed, options.Selection(_layout), options.StashCodecSettings)
                    : new RelayExecutor(backend, _eps, mb, options.MicroBatches, options.Stash, resume, _control, options.GradientFault,
                        options.ResolvedDropout, options.Seed, options.Selection(_layout), options.StashCodecSettings);
            }
            catch
            {
                _eps.Dispose();
                throw;
            }
        }
        else
        {
            _executor = new ConventionalExecutor(backend, _layout, init ?? Models.Initialize(_layout, options.Seed), options.Optimizer, options.LearningRate, mb, options.MicroBatches, resume,
                _control, options.GradientFault, options.ResolvedDropout, options.Seed, options.Selection(_layout), options.Precision);
        }
        HostBytes = backend.Memory.PinnedHostPeakBytes - pinnedBefore + (_eps?.OptimizerStateBytes ?? 0);
    }

    private static IBatchSource CheckedBatches(TrainOptions options, ITokenSource data, ITokenSource? labels)
    {
        options.Validate();
        if (data.VocabSize > options.Config.VocabSize)
            throw new ArgumentException($"The data ({data.Description}) uses a vocabulary of {data.VocabSize}, larger than the model's vocab_size {options.Config.VocabSize}.");
        return BatchSources.Create(options, data, labels);
    }

    /// <summary>The accelerators this process trains on (one unless data parallel over devices).</summary>
    public IReadOnlyList<Backend> Devices => _parallel?.Devices ?? [_backend];

    /// <summary>Whether this process writes the metrics log and checkpoints: rank 0 of the job (every process that is not an MPI rank).</summary>
    public bool Writes => (_parallel?.Rank ?? 0) == 0;

    /// <summary>The parameter layout.</summary>
    public ModelLayout Layout => _layout;

    /// <summary>Optimizer steps completed.</summary>
    public long StepsDone => _executor.StepsDone;

    /// <summary>
    /// Host bytes the run holds, measured when the executor was built: every pinned host buffer (the param server's
    /// weights and gradient buffers, the executor's stash, inputs and loss) plus the param server's optimizer state.
    /// </summary>
    public long HostBytes { get; }

    /// <summary>Host bytes per parameter held by the relay's param server (null for the conventional executor).</summary>
    public double? HostBytesPerParameter => _eps?.HostBytesPerParameter;

    /// <summary>Runs one step on the next minibatch and returns its metrics.</summary>
    public StepMetrics Step()
    {
        var step = _executor.StepsDone;
        _loader.Fill(step, _inputs, _targets);
        if (_options.WorldSize > 1)
        {
            _parallel!.TakeRankShare(_inputs, _rankInputs, _options.SeqLen);
            _parallel.TakeRankShare(_targets, _rankTargets, _options.SeqLen);
        }
        var clock = Stopwatch.StartNew();
        var result = _executor.Step(step, _rankInputs, _rankTargets);
        var seconds = clock.Elapsed.TotalSeconds;
        // The job's tokens over this rank's step time; the device figures are the largest over this process's devices.
        var peak = Devices.MaxBy(d => d.Memory.PeakBytes)!.Memory;
        return new StepMetrics(step + 1, result.Loss, _options.LearningRate.At(step), _inputs.Length / seconds, seconds,
            peak.PeakBytes, peak.PeakByCategory(), result.BusBytes, Devices.Max(d => d.Memory.AllocationCount), result.CopyWaitSeconds, result.UpdateWaitSeconds,
            GradNorm: result.GradNorm, SkippedSteps: result.SkippedSteps, LossScale: result.LossScale, BlocksRun: result.BlocksRun,
            BackwardLayers: result.BackwardLayers, WorldSize: _options.WorldSize, Devices: _options.Devices,
            CollectiveSeconds: result.CollectiveSeconds, CollectiveHiddenSeconds: result.CollectiveHiddenSeconds, BusBytesByKind: result.BusBytesByKind, HostBytes: HostBytes, StashBits: result.StashBits,
            Precision: _options.Precision.Name(), OverflowedLayers: result.OverflowedLayers);
    }

    /// <summary>Runs until <see cref="TrainOptions.Steps"/> steps are done, calling <paramref name="onStep"/> after each.</summary>
    public IReadOnlyList<StepMetrics> Run(Action<StepMetrics>? onStep = null, string? metricsPath = null, CancellationToken cancel = default)
    {
        var all = new List<StepMetrics>();
        using var log = metricsPath is null || !Writes ? null : OpenLog(metricsPath);
        while (_executor.StepsDone < _options.Steps)
        {
            if (StopRequested(cancel)) throw new OperationCanceledException(cancel);
            var metrics = Step();
            if (_validation is { } v && (metrics.Step % v.Every == 0 || metrics.Step == _options.Steps))
                metrics = metrics with { ValLoss = Validate() };
            all.Add(metrics);
            if (log is not null)
            {
                log.WriteLine(ToJson(metrics));
                log.Flush();
            }
            onStep?.Invoke(metrics);
        }
        return all;
    }

    // Every rank stops after the same step: an interrupt seen by any rank (mpirun forwards it to all, not at the same instant) stops all.
    private unsafe bool StopRequested(CancellationToken cancel)
    {
        if (_options.WorldSize == 1) return cancel.IsCancellationRequested;
        var flag = cancel.IsCancellationRequested ? 1f : 0f;
        _parallel!.Collectives.AllReduceSum(&flag, 1);
        return flag > 0;
    }

    private StreamWriter OpenLog(string path)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (!string.IsNullOrEmpty(dir)) Directory.CreateDirectory(dir);
        // A resumed run appends to its log, after dropping the lines of steps past its checkpoint (a
        // run that went on after its last save), so no step is logged twice; a fresh one starts anew.
        var done = _executor.StepsDone;
        if (done > 0 && File.Exists(path))
        {
            var lines = File.ReadAllLines(path);
            var keep = lines.TakeWhile(line => LoggedStep(line) is not { } s || s <= done).ToArray();
            if (keep.Length < lines.Length) File.WriteAllLines(path, keep);
        }
        return new StreamWriter(path, append: done > 0);
    }

    private static long? LoggedStep(string line)
    {
        try
        {
            using var json = JsonDocument.Parse(line);
            return json.RootElement.TryGetProperty("step", out var step) && step.TryGetInt64(out var s) ? s : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    /// <summary>One JSON line for the metrics file.</summary>
    public static string ToJson(StepMetrics m) => JsonSerializer.Serialize(WithValidation(m, new Dictionary<string, object>
    {
        ["step"] = m.Step,
        ["loss"] = m.Loss,
        ["lr"] = m.LearningRate,
        ["tokens_per_s"] = m.TokensPerSecond,
        ["step_s"] = m.StepSeconds,
        ["device_peak_bytes"] = m.DevicePeakBytes,
        ["device_peak_bytes_by_category"] = m.DevicePeakBytesByCategory,
        ["bus_bytes"] = m.BusBytes,
        ["bus_bytes_by_kind"] = m.BusBytesByKind.ByKind(),
        ["host_bytes"] = m.HostBytes,
        ["device_allocations"] = m.DeviceAllocations,
        ["copy_wait_s"] = m.CopyWaitSeconds,
        ["copy_wait_fraction"] = m.CopyWaitFraction,
        ["update_wait_s"] = m.UpdateWaitSeconds,
        ["update_wait_fraction"] = m.UpdateWaitFraction,
        ["grad_norm"] = double.IsFinite(m.GradNorm) ? m.GradNorm : null!, // JSON has no inf or NaN: null when the gradients overflowed
        ["skipped_steps"] = m.SkippedSteps,
        ["loss_scale"] = m.LossScale,
        ["blocks_run"] = m.BlocksRun,
        ["backward_layers"] = m.BackwardLayers,
        ["world_size"] = m.WorldSize,
        ["devices"] = m.Devices,
        ["collective_seconds"] = m.CollectiveSeconds,
        ["collective_hidden_seconds"] = m.CollectiveHiddenSeconds,
        ["precision"] = m.Precision,
    }));

    private static Dictionary<string, object> WithValidation(StepMetrics m, Dictionary<string, object> fields)
    {
        if (m.ValLoss is { } val) fields["val_loss"] = val;
        if (m.StashBits is { } bits) fields["stash_bits"] = bits;
        if (m.OverflowedLayers is { } overflowed) fields["overflowed_layers"] = overflowed;
        return fields;
    }

    /// <summary>
    /// Evaluates the model on <paramref name="data"/> every <paramref name="every"/> steps and after the last one, reporting
    /// <see cref="StepMetrics.ValLoss"/>: the mean loss over the windows that <paramref name="batches"/> minibatches take
    /// (batch i is step i's, unshuffled), run one micro-batch at a time through an <see cref="Evaluator"/> whose device
    /// buffers are allocated here, once. It equals <c>l2l eval --batch B/U --seq T --batches K*U</c> on a checkpoint of the
    /// same weights (and <c>--batch B --batches K</c> up to the order of the float sums).
    /// </summary>
    public void EnableValidation(ITokenSource data, int every, int batches)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (every < 1) throw new ArgumentException($"--val-every must be at least 1, got {every}.");
        if (batches < 1) throw new ArgumentException($"--val-batches must be at least 1, got {batches}.");
        if (data.VocabSize > _options.Config.VocabSize)
            throw new ArgumentException($"The validation data ({data.Description}) uses a vocabulary of {data.VocabSize}, larger than the model's vocab_size {_options.Config.VocabSize}.");
        _validation?.Evaluator.Dispose();
        _validation = new Validation(new BatchLoader(data, _options.MicroBatchSize, _options.SeqLen), every, batches * _options.MicroBatches,
            new Evaluator(_backend, _layout, null, _options.MicroBatchSize, _options.SeqLen, _options.Precision));
    }

    /// <summary>The mean validation loss of the current weights (<see cref="EnableValidation"/> first).</summary>
    public double Validate()
    {
        var v = _validation ?? throw new InvalidOperationException("Validation is not enabled.");
        return v.Evaluator.Evaluate(v.Data, v.Batches, _executor.Weights()).Loss;
    }

    private sealed record Validation(BatchLoader Data, int Every, int Batches, Evaluator Evaluator);

    /// <summary>A directory whose tokenizer files (<see cref="L2L.Model.Tokenizers.TextTokenizers"/>) every saved checkpoint gets a copy of.</summary>
    public string? TokenizerDirectory { get; set; }

    /// <summary>The current weights, one array per layer.</summary>
    public float[][] Weights() => _executor.Weights();

    /// <summary>The current optimizer state (what a checkpoint would store), after pending updates finish.</summary>
    public TrainingState State() => _executor.State(Metadata());

    private Dictionary<string, string> Metadata()
    {
        var metadata = new Dictionary<string, string>(RunSettings.Describe(_options));
        _control.Save(metadata);
        metadata[TrainOptions.WorldSizeKey] = _options.WorldSize.ToString(System.Globalization.CultureInfo.InvariantCulture);
        metadata[TrainOptions.DevicesKey] = _options.Devices.ToString(System.Globalization.CultureInfo.InvariantCulture);
        metadata[TrainOptions.ShardOptimizerKey] = _options.ShardOptimizer ? "true" : "false";
        return metadata;
    }

    /// <summary>Saves the model, optimizer state and run settings (<see cref="RunSettings"/>) to <paramref name="dir"/> (atomically: a failed save leaves the old checkpoint intact).</summary>
    /// <param name="dir">The checkpoint directory.</param>
    /// <param name="notice">Receives a sentence for each leftover of an earlier interrupted save that was tidied.</param>
    /// <remarks>Every rank of a job calls it (the weights and state may be gathered from the ranks); rank 0 alone writes.</remarks>
    public void Save(string dir, Action<string>? notice = null)
    {
        var weights = _executor.Weights();
        var state = _executor.State(Metadata());
        if (!Writes) return;
        Checkpoint.Save(dir, _layout, weights, state, notice);
        if (TokenizerDirectory is { } tokenizer)
            L2L.Model.Tokenizers.TextTokenizers.CopyFiles(tokenizer, dir);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _validation?.Evaluator.Dispose();
        _executor.Dispose();
        _eps?.Dispose();
        for (var i = 0; i < _budgetBefore.Length; i++)
            Devices[i].Memory.BudgetBytes = _budgetBefore[i];
    }
}
